//! RUN gets at least Docker's default isolation, as root and rootless.
