# SPDX-License-Identifier: GPL-2.0-only
# Shortcuts; each goes through .ci/setup, which installs whatever is missing first.
.PHONY: run test test-fast e2e lint deb

run:
	sh .ci/setup run

# Lint, then the whole suite (what CI runs through .ci/run).
test:
	sh .ci/setup test

# Lint, then everything but the QEMU guests (about a minute).
test-fast:
	sh .ci/setup test --ignore=tests/e2e

# Only the QEMU tests: real kernels hot-add a DIMM or a CPU, crash, and /proc/vmcore is read; the systemd guest
# too (about five minutes under TCG once its image is cached).
e2e:
	sh .ci/setup test tests/e2e

# ruff and mypy, as configured in pyproject.toml.
lint:
	sh .ci/setup lint

# crashhpd_<version>_<arch>.deb for Debian 12, here or in DEB_DIR: apt install ./crashhpd_*.deb
deb:
	sh .ci/setup deb $(DEB_DIR)
