# emovit — the README's commands. Everything runs inside .venv, created on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet -c constraints.txt
# Extras the test suite exercises (kept in step with pyproject.toml).
TEST_EXTRAS := dev,train,onnx,faces,serve,video,ray

.PHONY: demo test lint format install install-dev clean train-default train-teacher train-vit-student train-ferplus

# The embedded default model: a CNN teacher, then a MobileViT (convolutions + transformer
# blocks) distilled from it, then two more stages that each continue the MobileViT (--init) on
# the labels alone with a fresh cosine schedule (warm restarts). All runs resume where they
# stopped (run the target again after an interruption or a --time-limit pause; a finished run
# is skipped); when the model is done it is evaluated on the test split and copied into the
# package with its card. runs/default is tracked in git so that a run longer than one working
# session continues in the next one.
# `train-vit-student` is the plain-ViT run the card compares against (why the default is a hybrid).
TRAIN_DATA ?= ../shared/data/fer2013
TRAIN_DIR  ?= runs/default
TIME_LIMIT ?= 170
# The framing the default model records (emovit.json; later stages inherit it through --init):
# FER2013's tight grey crops, margin measured by scripts/find_framing.py.
DEFAULT_FRAMING ?= --face-margin 0.0 --face-align --grey
resume = $(if $(wildcard $(1)/checkpoint/state.json),--resume,)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e '.[$(TEST_EXTRAS)]'
	@touch $@

$(VENV)/.installed-faces: $(VENV)/.installed
	$(PIP) -e '.[faces]'
	@touch $@

install: $(VENV)/.installed          ## emovit and its core dependencies
install-dev: $(VENV)/.installed-dev  ## plus the extras the tests need
demo: $(VENV)/.installed-faces  ## classify the photos in examples/ with the embedded default model
	@if $(BIN)/python -c "from emovit.models import resolve_model; resolve_model('default')" 2>/dev/null; then \
	  $(BIN)/emovit predict examples/ --detector auto; \
	else \
	  echo "*** The embedded default model is not built yet: the demo runs the reference"; \
	  echo "*** architecture with RANDOM weights. Its labels are MEANINGLESS."; \
	  test -f .cache/random-reference/model.safetensors || $(BIN)/python -c \
	    "from emovit.models import build_random_model; build_random_model('.cache/random-reference')"; \
	  $(BIN)/emovit predict examples/ --detector auto --model .cache/random-reference; \
	fi

lint: $(VENV)/.installed-dev  ## ruff (lint + format) and mypy over src/
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy

format: $(VENV)/.installed-dev
	$(BIN)/ruff format src tests benchmarks scripts
	$(BIN)/ruff check --fix src tests benchmarks scripts

test: lint  ## ruff and mypy, then the test suite (the layering check is tests/test_layering.py)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

train-default: train-teacher  ## train the embedded default model (hours on 2 CPU cores; resumable)
	$(BIN)/emovit train $(TRAIN_DATA) -o $(TRAIN_DIR)/mobilevit --arch mobilevit-xxs-64 --epochs 32 \
	  --batch-size 128 --lr 8e-4 --warmup-epochs 1 --balance none --patience 32 --seed 0 \
	  --teacher $(TRAIN_DIR)/teacher --distill-alpha 0.5 --distill-temperature 2 $(DEFAULT_FRAMING) \
	  --time-limit $(TIME_LIMIT) $(call resume,$(TRAIN_DIR)/mobilevit)
	$(BIN)/emovit train $(TRAIN_DATA) -o $(TRAIN_DIR)/mobilevit-stage2 --init $(TRAIN_DIR)/mobilevit --epochs 48 \
	  --batch-size 128 --lr 5e-4 --warmup-epochs 1 --balance none --patience 48 --seed 1 \
	  --time-limit $(TIME_LIMIT) $(call resume,$(TRAIN_DIR)/mobilevit-stage2)
	$(BIN)/emovit train $(TRAIN_DATA) -o $(TRAIN_DIR)/mobilevit-stage3 --init $(TRAIN_DIR)/mobilevit-stage2 --epochs 50 \
	  --batch-size 128 --lr 4e-4 --warmup-epochs 1 --balance none --patience 50 --seed 2 \
	  --time-limit $(TIME_LIMIT) $(call resume,$(TRAIN_DIR)/mobilevit-stage3)
	$(BIN)/python scripts/build_default_model.py $(TRAIN_DIR)/mobilevit-stage3 src/emovit/models/default \
	  --data $(TRAIN_DATA) --compare $(TRAIN_DIR)/vit-student --onnx

# The second generation (FER+ vote distributions, photo-like augmentation, logit adjustment),
# in progress: it continues stage 3 and resumes across sessions; it is not shipped yet.
FERPLUS_LABELS ?= ../shared/data/ferplus/labels.csv
train-ferplus: $(VENV)/.installed-dev  ## the FER+ stage of the next default model (resumable)
	$(BIN)/emovit train $(TRAIN_DATA) -o $(TRAIN_DIR)/ferplus --init $(TRAIN_DIR)/mobilevit-stage3 \
	  --labels $(FERPLUS_LABELS) --epochs 30 --batch-size 128 --lr 3e-4 --warmup-epochs 1 \
	  --label-smoothing 0.05 --balance none --logit-adjust 0.5 --augment robust --patience 30 --seed 4 \
	  $(DEFAULT_FRAMING) --time-limit $(TIME_LIMIT) $(call resume,$(TRAIN_DIR)/ferplus)

train-teacher: $(VENV)/.installed-dev  ## the CNN teacher used (in training only) by the default model
	$(BIN)/emovit train $(TRAIN_DATA) -o $(TRAIN_DIR)/teacher --arch resnet-teacher-64 --epochs 15 \
	  --batch-size 128 --lr 2e-3 --warmup-epochs 1 --balance none --patience 15 --seed 0 \
	  --time-limit $(TIME_LIMIT) $(call resume,$(TRAIN_DIR)/teacher)

train-vit-student: train-teacher  ## the plain-ViT comparison run (the same teacher; resumable)
	$(BIN)/emovit train $(TRAIN_DATA) -o $(TRAIN_DIR)/vit-student --arch vit-student-48 --epochs 40 \
	  --batch-size 128 --lr 1e-3 --warmup-epochs 2 --balance none --patience 40 --seed 0 \
	  --teacher $(TRAIN_DIR)/teacher --distill-alpha 0.7 --distill-temperature 2 \
	  --time-limit $(TIME_LIMIT) $(call resume,$(TRAIN_DIR)/vit-student)

clean:
	rm -rf .cache .pytest_cache .ruff_cache build dist src/*.egg-info
