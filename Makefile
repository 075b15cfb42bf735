# Top-level tasks. `make image` is the main job: build imgbuild's own release
# image (specs/app.toml) from a static release binary. Works from any
# directory (`make -f path/to/Makefile image`) and with any CARGO_TARGET_DIR.

ROOT   := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
HOST   := $(shell rustc -vV | sed -n 's/^host: //p')
# Wherever cargo puts its output (CARGO_TARGET_DIR, .cargo/config.toml):
# cargo itself says.
TARGET_DIR := $(shell cd $(ROOT) && cargo metadata --no-deps --format-version 1 2>/dev/null | \
	sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
STATIC := $(TARGET_DIR)/$(HOST)/release/imgbuild
# The binary is staged inside the build context (COPY reads only the
# context); specs/app.toml copies it from here.
STAGED := $(ROOT)/dist/bin/imgbuild
# Reproducible timestamps: the commit time (falls back to the spec's value
# outside a git checkout).
export SOURCE_DATE_EPOCH ?= $(shell git -C $(ROOT) log -1 --format=%ct 2>/dev/null)

.PHONY: image static test clean

image: static
	mkdir -p $(dir $(STAGED))
	cp $(STATIC) $(STAGED)
	$(STAGED) $(ROOT)/specs/app.toml

# Statically linked, so it runs in an image without a libc. --target keeps
# crt-static away from build scripts and proc macros.
# libseccomp (the RUN sandbox's filter) is linked from its static archive.
SECCOMP_LIB := $(dir $(shell $${CC:-cc} -print-file-name=libseccomp.a))
static:
	cd $(ROOT) && LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=$(SECCOMP_LIB) \
	RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target $(HOST)

test:
	cd $(ROOT) && cargo test --locked

clean:
	rm -rf $(ROOT)/dist
