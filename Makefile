# fer-lightning: `make train` and `make test` work from a fresh clone (they create .venv and install first).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# torch is installed first, by exact version, so nothing can make pip pick another (CUDA-sized) build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install train test test-slow bench gpu-check race leaderboard-row lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The main job on the embedded synthetic data: trains, validates, tests and prints the final accuracy.
train: install
	$(PY) train.py experiment=quickstart

# The fast suite (what CI runs); slow real-data checks have their own target.
test: install
	$(PY) -m pytest -m "not slow" -q

test-slow: install
	$(PY) -m pytest -m slow -q

# Training and inference speed on this machine (fer_lightning/bench/): framework vs bare model step vs a plain
# PyTorch loop, both data paths; writes experiments/bench/<machine>.json and .md. BENCH_ARGS="--models resnet18 ..."
# (Hydra overrides of the train config go beside the options: BENCH_ARGS="--models resnet18 aug=light")
BENCH_ARGS ?= --models mini_xception aug=heavy
bench: install
	$(PY) -m fer_lightning.bench $(BENCH_ARGS) --out experiments/bench

# The GPU path on one CUDA machine (scripts/gpu_check.sh, <= 8 min with the install): GPU tests, host-sync audit,
# bench for mini_xception and resnet18, a short real-data ResNet-18 run with GPU utilisation; one summary table.
# Without CUDA it says so and exits 0. DATA=<fer2013.csv.gz> EPOCHS=3
gpu-check: install
	PY=$(PY) bash scripts/gpu_check.sh

# Time to PublicTest accuracy on real FER2013: the fast CPU recipe vs the plain loop, one budget each, one run
# (fer_lightning/bench/time_to_accuracy.py); writes results.json / .md and time_to_accuracy.png under RACE_OUT
FER2013 ?= data/fer2013/fer2013.csv
RACE_BUDGET_MIN ?= 27
RACE_OUT ?= logs/time_to_accuracy/mini_xception
RACE_ARGS ?= experiment=cpu_fast
race: install
	$(PY) -m fer_lightning.bench.time_to_accuracy --budget-min $(RACE_BUDGET_MIN) --out $(RACE_OUT) \
		data.path=$(FER2013) $(RACE_ARGS)

# One row of the equal-budget leaderboard (conf/experiment/leaderboard.yaml: 45 min of training, then val/test and
# flip TTA), its small files kept in experiments/leaderboard/<model> (fer-keep-run; checkpoints stay in logs/).
# Cut off: resume with the command the run prints (ckpt_path=logs/leaderboard/<model>/checkpoints/last.ckpt), then
# python -m fer_lightning.tools.keep_run logs/leaderboard/<model> experiments/leaderboard/<model>
MODEL ?= mini_xception
leaderboard-row: install
	$(PY) train.py experiment=leaderboard data.path=$(FER2013) hydra.mode=RUN model=$(MODEL) \
		hydra.run.dir=logs/leaderboard/$(MODEL)
	$(PY) -m fer_lightning.tools.keep_run logs/leaderboard/$(MODEL) experiments/leaderboard/$(MODEL)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) logs .pytest_cache .ruff_cache
