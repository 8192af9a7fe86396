# `make demo` and `make test` are the whole set-up: .venv is created and filled only when
# missing or when pyproject.toml changed since the last install (torch is never reinstalled
# once present: pip skips satisfied requirements).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/modeguard audit || test $$? -eq 1
	$(VENV)/bin/modeguard check --ignore-noqa examples/ || test $$? -eq 1

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
