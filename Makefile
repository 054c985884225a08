# Two commands for users: `make demo` and `make test` (what .ci/run calls).
# Everything runs with the system python, which is where the distro's BCC
# binding (python3-bpfcc) lives; the python3 first on PATH may be another one.
PY        ?= /usr/bin/python3
LAB_KERNEL ?= 6.1
export LAB_KERNEL
LAB_CACHE ?= /var/cache/skbtrace-lab
export LAB_CACHE

# LAB_KERNELS: the kernels `make test-matrix` runs the lab tests on, one
# guest at a time (see docs/lab.md for what each costs).
LAB_KERNELS ?= 6.1 5.10 6.12

HOST_PACKAGES = qemu-system-x86 qemu-utils debootstrap e2fsprogs cpio zstd xz-utils \
	busybox-static iproute2 ethtool gcc python3-pytest python3-pyroute2 python3-tabulate \
	python3-pip python3-setuptools python3-wheel python3-venv python3-jsonschema \
	python3-yaml man-db groff-base logrotate python3-hypothesis python3-scapy patchelf \
	crash
# Checkers from PyPI, in a venv of their own (the tools themselves run on the
# system python): vermin for Python 3.6, kubernetes-validate with the
# Kubernetes schemas bundled (validates deploy/ offline).
VENV_TOOLS = .venv-tools
TOOLS_PIP = vermin==1.6.0 kubernetes-validate==1.37.0

.PHONY: deps tools image test test-unit test-unit-py36 test-lab test-lab-selftest test-lab-kernels test-lab-panic test-matrix check-py36 check-deploy man demo bench bench-postmortem clean

deps:
	@if ! dpkg -s $(HOST_PACKAGES) >/dev/null 2>&1; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			-o DPkg::Lock::Timeout=300 $(HOST_PACKAGES); \
	fi

image: deps
	$(PY) tests/lab/image.py --kernel $(LAB_KERNEL)

# SKBTRACE_REQUIRE_NOBODY: test_not_root fails, not skips, where nobody
# cannot run the interpreter.
test-unit: deps
	SKBTRACE_REQUIRE_NOBODY=1 $(PY) -m pytest tests/unit -q

# The unit tests again on Python 3.6 (RHEL 8's platform-python), in a venv
# under $(LAB_CACHE) that tests/py36/venv.py builds once; a machine without a
# 3.6 gets a WARNING, not a failure.
test-unit-py36: deps
	@py36=$$($(PY) tests/py36/venv.py --cache $(LAB_CACHE)) || exit 1; \
	if [ -n "$$py36" ]; then \
		echo "=== unit tests on $$($$py36 -c 'import sys; print(sys.version.split()[0])') ($$py36) ==="; \
		SKBTRACE_REQUIRE_NOBODY=1 $$py36 -m pytest tests/unit -q -rs -p no:cacheprovider; \
	fi

tools: deps
	@test -x $(VENV_TOOLS)/bin/vermin -a -x $(VENV_TOOLS)/bin/kubernetes-validate || \
		($(PY) -m venv $(VENV_TOOLS) && $(VENV_TOOLS)/bin/pip install -q $(TOOLS_PIP))

# The tools must run on RHEL 8's platform-python 3.6: vermin checks every
# file a user runs for syntax and stdlib calls newer than 3.6.
check-py36: tools
	$(VENV_TOOLS)/bin/vermin -q -t=3.6- --no-tips --violations \
		skbtrace bpf/__init__.py skb_frag_list_watcher.py skb_vxlan_source_detector.py \
		skb_postmortem.py setup.py

# Section-8 pages from the same argparse parsers as --help (setup.py builds
# and installs them too): build/man/<command>.8, read with man -l.
man:
	$(PY) -m skbtrace.manpage build/man

# deploy/: the DaemonSet against the Kubernetes schemas, the systemd units
# against the tools' parsers, the logrotate snippet run by logrotate. The
# unit tests skip the schema check where the validator is missing; here it
# must run.
check-deploy: tools
	SKBTRACE_REQUIRE_VALIDATOR=1 $(PY) -m pytest tests/unit/test_deploy.py -q -rs -p no:cacheprovider

test-lab: image
	$(PY) -m pytest tests/lab -m "not panic" -v -rs --durations=0 -p no:cacheprovider

# Real panics (a guest each), read from the dead guest's serial console: the
# flight recorder's proof. LAB_PANIC_KERNELS: where CI runs them.
LAB_PANIC_KERNELS ?= 6.1 5.10
# On 5.10 CI leaves out the plain injected panic (the encapsulated one goes
# through the same skb_segment site, and the natural panic runs there): a boot
# and two compiles less. LAB_PANIC_ALL=1 runs every panic test everywhere.
LAB_PANIC_SKIP_5.10 = plain
test-lab-panic: deps
	@set -e; for k in $(LAB_PANIC_KERNELS); do \
		echo "=== lab panic tests on LAB_KERNEL=$$k ==="; \
		$(PY) tests/lab/image.py --kernel $$k >/dev/null; \
		sel=""; if [ "$$k" = 5.10 ] && [ -z "$(LAB_PANIC_ALL)" ]; then sel="not $(LAB_PANIC_SKIP_5.10)"; fi; \
		LAB_KERNEL=$$k $(PY) -m pytest tests/lab -m panic $${sel:+-k "$$sel"} -v -rs --durations=0 -p no:cacheprovider; \
	done

# only the lab's own self-tests (boot, BCC, traffic, injector)
test-lab-selftest: image
	$(PY) -m pytest tests/lab/test_lab_selftest.py -v -p no:cacheprovider

# The other kernels in CI: the self-tests and every tool scenario marked
# `matrix` (one per setter class, healthy forwarding, the pull_data crash
# scenario); the filter tests run on 6.1 only. What it costs and why not the
# full suites: docs/lab.md "CI and the kernel matrix".
LAB_EXTRA_KERNELS ?= 5.10 6.12
test-lab-kernels: deps
	@set -e; for k in $(LAB_EXTRA_KERNELS); do \
		echo "=== lab matrix tests on LAB_KERNEL=$$k ==="; \
		$(PY) tests/lab/image.py --kernel $$k >/dev/null; \
		LAB_KERNEL=$$k $(PY) -m pytest tests/lab -m "matrix and not panic" -v -rs --durations=0 -p no:cacheprovider; \
	done

# every kernel in LAB_KERNELS, one after the other; stops at the first failure
test-matrix: deps
	@set -e; for k in $(LAB_KERNELS); do \
		echo "=== LAB_KERNEL=$$k ==="; \
		LAB_KERNEL=$$k $(PY) tests/lab/image.py --kernel $$k >/dev/null; \
		LAB_KERNEL=$$k $(PY) -m pytest tests/lab -v -rs --durations=0 -p no:cacheprovider; \
	done

test: deps check-deploy test-unit test-unit-py36 check-py36 test-lab test-lab-kernels test-lab-panic

demo: image
	$(PY) tests/lab/demo.py

bench: deps
	$(PY) tests/bench/bench_pipeline.py

# skb_postmortem on a 1 GB log replayed from the real fixtures: throughput,
# peak RSS (docs/skb_postmortem.md, OVERHEAD); BENCH_MB to change the size
BENCH_MB ?= 1024
bench-postmortem:
	$(PY) tests/bench/bench_postmortem.py --mb $(BENCH_MB)

clean:
	rm -rf build dist *.egg-info $(VENV_TOOLS) .pytest_cache
