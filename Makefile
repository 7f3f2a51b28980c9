# Shortcuts; each goes through .ci/setup, which installs whatever is missing first.
.PHONY: run test e2e

run:
	sh .ci/setup run

test:
	sh .ci/setup test

# Only the QEMU tests: real kernels hot-add a DIMM or a CPU, crash, and /proc/vmcore is read (under two minutes under TCG).
e2e:
	sh .ci/setup test tests/e2e
