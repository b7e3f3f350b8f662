# Two commands for a fresh machine: `make demo` (the main job) and `make test` (the test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The CPU build of torch is pinned only where no GPU is present (see constraints.txt).
CONSTRAINTS := $(shell command -v nvidia-smi >/dev/null 2>&1 || echo "-c constraints.txt")

.PHONY: install demo demo-photos photos-chain test test-fast lint data clean

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(CONSTRAINTS) -e ".[dev]"
	touch $@

install: $(VENV)/.installed

data:
	bash scripts/get_fashion_mnist.sh

demo: install data
	$(PY) -m hf_vq.cli demo

# The photo chain of issue 26 (docs/photos.md), on 64x64 RGB patches of Debian's wallpaper photographs: dataset ->
# tokenizer (+ its evaluation on the test split and on the held-out package) -> token ViT and pixel ViT -> MaskGIT
# prior with its sample grid. Each stage is a file target: an interrupted run starts again at the first stage without
# its result (the tokenizer from its last checkpoint). Budgets are the configs'; PHOTOS_*_STEPS=N shortens a stage and
# PHOTOS_DATASET_FLAGS passes flags to scripts/make_photo_dataset.py (a smoke run, about 5 CPU-minutes: make demo-photos
# PHOTOS_DATA=outputs/photos64-small PHOTOS_DATASET_FLAGS="--scales 256" PHOTOS_OUT=outputs/demo-photos-smoke
# PHOTOS_TOKENIZER_STEPS=20 PHOTOS_CLASSIFIER_STEPS=20 PHOTOS_PRIOR_STEPS=20). The chain runs on 16x16 tokens with
# PHOTOS_TOKENIZER_CONFIG=configs/vqgan_photos64_16x16_cpu.yaml (every later stage reads the grid from the tokenizer).
PHOTOS_DATA ?= outputs/photos64
PHOTOS_DATASET_FLAGS ?=
PHOTOS_OUT ?= outputs/demo-photos
PHOTOS_TOKENIZER_CONFIG ?= configs/vqgan_photos64_cpu.yaml
PHOTOS_TOKENIZER_STEPS ?=
PHOTOS_CLASSIFIER_STEPS ?=
PHOTOS_PRIOR_STEPS ?=
steps_flag = $(if $(1),--max_train_steps $(1))
PHOTOS_TOKEN_DATA := --train_data_dir $(PHOTOS_DATA)/photos --tokenizer_name_or_path $(PHOTOS_OUT)/tokenizer

demo-photos: install
	$(MAKE) --no-print-directory photos-chain PY=$(PY)

photos-chain: $(PHOTOS_OUT)/tokenizer-eval/metrics.json $(PHOTOS_OUT)/token_vit/metrics.json \
		$(PHOTOS_OUT)/prior/metrics.json
	@echo "photo chain done: tokenizer $(PHOTOS_OUT)/tokenizer (test and held-out: $(PHOTOS_OUT)/tokenizer-eval),"
	@echo "  classifiers $(PHOTOS_OUT)/token_vit and $(PHOTOS_OUT)/pixel_vit, prior $(PHOTOS_OUT)/prior/samples.png"

$(PHOTOS_DATA)/manifest.json:
	$(PY) scripts/make_photo_dataset.py --output_dir $(PHOTOS_DATA) $(PHOTOS_DATASET_FLAGS)

$(PHOTOS_OUT)/tokenizer/metrics.json: $(PHOTOS_DATA)/manifest.json
	$(PY) -m hf_vq.cli train-tokenizer --config $(PHOTOS_TOKENIZER_CONFIG) --train_data_dir $(PHOTOS_DATA)/photos \
		--output_dir $(PHOTOS_OUT)/tokenizer --resume_from_checkpoint latest $(call steps_flag,$(PHOTOS_TOKENIZER_STEPS))

$(PHOTOS_OUT)/tokenizer-eval/metrics.json: $(PHOTOS_OUT)/tokenizer/metrics.json
	$(PY) scripts/evaluate_photo_tokenizers.py --model_dirs $(PHOTOS_OUT)/tokenizer \
		--data_dirs $(PHOTOS_DATA)/photos/test $(PHOTOS_DATA)/heldout/test --output_dir $(PHOTOS_OUT)/tokenizer-eval

$(PHOTOS_OUT)/token_vit/metrics.json: $(PHOTOS_OUT)/tokenizer/metrics.json
	$(PY) -m hf_vq.cli train-classifier --config configs/token_vit_photos64.yaml $(PHOTOS_TOKEN_DATA) \
		--output_dir $(PHOTOS_OUT)/token_vit $(call steps_flag,$(PHOTOS_CLASSIFIER_STEPS))

$(PHOTOS_OUT)/pixel_vit/metrics.json: $(PHOTOS_OUT)/tokenizer/metrics.json
	$(PY) -m hf_vq.cli train-classifier --config configs/token_vit_photos64.yaml $(PHOTOS_TOKEN_DATA) \
		--model_type pixel_vit --output_dir $(PHOTOS_OUT)/pixel_vit $(call steps_flag,$(PHOTOS_CLASSIFIER_STEPS))

$(PHOTOS_OUT)/prior/metrics.json: $(PHOTOS_OUT)/pixel_vit/metrics.json
	$(PY) -m hf_vq.cli train-prior --config configs/maskgit_photos64.yaml $(PHOTOS_TOKEN_DATA) \
		--eval_classifier_name_or_path $(PHOTOS_OUT)/pixel_vit --output_dir $(PHOTOS_OUT)/prior \
		$(call steps_flag,$(PHOTOS_PRIOR_STEPS))

lint: install
	$(VENV)/bin/ruff check hf_vq tests scripts utils

test: install data lint
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -q -m "not slow" -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info outputs
