# Top-level tasks. `make image` is the main job: build imgbuild's own release
# image (specs/app.toml) from a static release binary.

HOST   := $(shell rustc -vV | sed -n 's/^host: //p')
STATIC := target/$(HOST)/release/imgbuild
# Reproducible timestamps: the commit time (falls back to the spec's value
# outside a git checkout).
export SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null)

.PHONY: image static test clean

image: static
	$(STATIC) specs/app.toml

# Statically linked, so it runs in an image without a libc. --target keeps
# crt-static away from build scripts and proc macros.
# libseccomp (the RUN sandbox's filter) is linked from its static archive.
SECCOMP_LIB := $(dir $(shell $${CC:-cc} -print-file-name=libseccomp.a))
static:
	LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=$(SECCOMP_LIB) \
	RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target $(HOST)

test:
	cargo test --locked

clean:
	rm -rf dist
