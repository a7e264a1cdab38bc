PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

CCE_BENCH ?= cce-bench
RESULTS ?= results
QUICK_RESULTS ?= results/quick
# reproduce-quick: a tiny synthetic stand-in for every paper dataset, two budgets, one seed and
# two epochs (so clustering runs once); every method and n_chunks value of each spec stays.
QUICK_FLAGS ?= --datasets syn-60-2400 --budgets 8,64 --seeds 1 --epochs 2
# The Criteo specs on a tiny criteo-synthetic (7,000 rows, ids capped at 300) with small MLPs:
# two caps, evaluation and clustering every 20 steps through the first half, two epochs.
QUICK_DLRM_FLAGS ?= --datasets criteo-synthetic-7000-cap300 --budgets 320,1280 --budget-unit \
  params --seeds 1 --epochs 2 --dim 16 --bottom-mlp 13-32-16 --top-mlp 32-1 --batch-size 128 \
  --eval-every 20 --cluster-every 20 --cluster-until 0.5
QUICK_JOBS ?= 2
# Extra flags for every sweep of `make reproduce`, e.g. REPRODUCE_FLAGS="--workers-per-gpu 4".
REPRODUCE_FLAGS ?=
PAPER_SPECS := $(sort $(basename $(notdir $(wildcard sweeps/paper/*.toml))))

.PHONY: install install-gpu test test-gpu lint clean reproduce reproduce-quick

# CPU machines (and CI): editable install with the Ray extra, CPU torch kept by the constraints
# file.
install:
	$(PIP) install -c constraints-cpu.txt -e ".[dev,ray]"

# GPU machines: keep the torch that is already installed (CUDA build); see README.
install-gpu:
	$(PIP) install -e ".[dev]"

# reproduce-quick first, into a scratch folder with its own data cache (never the user's), so
# pytest's summary is the last line.
test:
	scratch="$$(mktemp -d)" && CCE_BENCH_DATA="$$scratch/data" \
	  $(MAKE) reproduce-quick QUICK_RESULTS="$$scratch/results"
	$(PYTHON) -m pytest

test-gpu:
	$(PYTHON) -m pytest -m gpu

# Every paper spec (sweeps/paper/*.toml): download what it needs, train what is not in
# $(RESULTS)/<spec>.csv yet, draw $(RESULTS)/figures/<spec>/ and $(RESULTS)/tables/<spec>.md, and
# end with the comparison against the authors' results, $(RESULTS)/tables/<spec>-vs-paper.md.
# A spec whose data cannot be had fails alone; the others go on.
reproduce:
	$(MAKE) --keep-going $(PAPER_SPECS:%=reproduce-spec/%)

# The same pipeline on tiny stand-ins, in minutes on a CPU; checks that every spec drew its
# figures and table.
reproduce-quick:
	$(MAKE) -j$(QUICK_JOBS) $(PAPER_SPECS:%=quick-spec/%)
	@for spec in $(PAPER_SPECS); do \
	  ls $(QUICK_RESULTS)/figures/$$spec/*.png > /dev/null 2>&1 \
	    && test -s $(QUICK_RESULTS)/tables/$$spec.md \
	    && test -s $(QUICK_RESULTS)/tables/$$spec-vs-paper.md \
	    || { echo "reproduce-quick: no figures or tables for paper/$$spec"; exit 1; }; \
	done
	@echo "reproduce-quick: figures and tables of $(words $(PAPER_SPECS)) specs in $(QUICK_RESULTS)"

# $(call paper_spec,SPEC,RESULTS,SWEEP-FLAGS): sweep one spec, then its figures and tables, and
# how close it came to the authors' own results: tables/<spec>-vs-paper.md (a dataset they never
# ran, as the quick stand-in, says so there).
define paper_spec
$(CCE_BENCH) sweep paper/$(1) --results $(2) $(3)
$(CCE_BENCH) plot $(1) --results $(2) --kind all --reference paper --out $(2)/figures/$(1)
@mkdir -p $(2)/tables
$(CCE_BENCH) report $(1) --results $(2) --format markdown > $(2)/tables/$(1).md.tmp
@mv $(2)/tables/$(1).md.tmp $(2)/tables/$(1).md
$(CCE_BENCH) report $(1) --results $(2) --against paper --format markdown > $(2)/tables/$(1)-vs-paper.md.tmp
@mv $(2)/tables/$(1)-vs-paper.md.tmp $(2)/tables/$(1)-vs-paper.md
endef

reproduce-spec/%:
	$(call paper_spec,$*,$(RESULTS),--download $(REPRODUCE_FLAGS))

# One torch thread per job: tiny runs spend more time waking threads than computing (on 2
# cores, a quick spec takes ~3 s of CPU with one thread and ~15 s with two).
quick-spec/%: export OMP_NUM_THREADS = 1
quick-spec/%:
	$(call paper_spec,$*,$(QUICK_RESULTS),$(QUICK_FLAGS))

quick-spec/criteo-%: export OMP_NUM_THREADS = 1
quick-spec/criteo-%:
	$(call paper_spec,criteo-$*,$(QUICK_RESULTS),$(QUICK_DLRM_FLAGS))

clean:
	rm -rf build dist *.egg-info src/*.egg-info .pytest_cache
