# Shortcuts; each goes through .ci/setup, which installs whatever is missing first.
.PHONY: run test e2e deb

run:
	sh .ci/setup run

test:
	sh .ci/setup test

# Only the QEMU tests: real kernels hot-add a DIMM or a CPU, crash, and /proc/vmcore is read (under two minutes under TCG).
e2e:
	sh .ci/setup test tests/e2e

# crashhpd_<version>_<arch>.deb for Debian 12, here or in DEB_DIR: apt install ./crashhpd_*.deb
deb:
	sh .ci/setup deb $(DEB_DIR)
