# C++ runner targets (runners/README.md); the top-level Makefile does `include runners/runners.mk`.
#
#   make llama3-xnnpack   -> build/llama3-xnnpack/llama3_runner
#   make qwen3-portable   -> build/qwen3-portable/qwen3_runner
#   make llama3-cuda      -> stops at configure unless CUDA and a CUDA-enabled executorch are present
#   make llama3-xnnpack-asan -> the XNNPACK runner with AddressSanitizer + UBSan (CI runs the bad-input corpus on it)
#
# One build tree per model and backend, configured once from CMakePresets.json (the backend's preset);
# later runs rebuild incrementally (and through ccache when it is installed).
# Standalone: make -f runners/runners.mk llama3-xnnpack

# Every models/<name>/main.cpp, the same glob CMakeLists.txt uses: a new family's runner needs no edit here.
ZOO_CPP_MODELS ?= $(patsubst models/%/main.cpp,%,$(sort $(wildcard models/*/main.cpp)))
ZOO_CPP_BACKENDS ?= xnnpack xnnpack-asan portable cuda
ZOO_CMAKE ?= $(if $(wildcard .venv/bin/cmake),.venv/bin/cmake,cmake)
ZOO_PYTHON ?= .venv/bin/python
ZOO_JOBS ?= 2
ZOO_CMAKE_GENERATOR ?= $(if $(shell command -v ninja 2>/dev/null),Ninja,Unix Makefiles)
ZOO_CMAKE_ARGS ?=

# The venv (executorch wheel, cmake >= 3.28) comes from the top-level Makefile's setup target; standalone,
# an existing venv is used as it is.
ZOO_SETUP_STAMP ?= .venv/.setup-done
ifeq ($(firstword $(MAKEFILE_LIST)),runners/runners.mk)
ZOO_SETUP_STAMP := $(wildcard .venv/.setup-done)
endif

define zoo_cpp_target
.PHONY: $(1)-$(2)
$(1)-$(2): $(ZOO_SETUP_STAMP)
	@test -f build/$(1)-$(2)/CMakeCache.txt || $(ZOO_CMAKE) --preset $(2) -B build/$(1)-$(2) -G "$(ZOO_CMAKE_GENERATOR)" \
		-DZOO_MODEL=$(1) -DZOO_PYTHON=$(abspath $(ZOO_PYTHON)) $(ZOO_CMAKE_ARGS) \
		|| { rm -f build/$(1)-$(2)/CMakeCache.txt; exit 1; }
	$(ZOO_CMAKE) --build build/$(1)-$(2) --target $(1)_runner -j $(ZOO_JOBS)
endef
$(foreach m,$(ZOO_CPP_MODELS),$(foreach b,$(ZOO_CPP_BACKENDS),$(eval $(call zoo_cpp_target,$(m),$(b)))))

.PHONY: cpp-runners cpp-clean
cpp-runners: $(foreach m,$(ZOO_CPP_MODELS),$(m)-xnnpack)  ## every model's XNNPACK runner
cpp-clean:
	rm -rf $(foreach m,$(ZOO_CPP_MODELS),$(foreach b,$(ZOO_CPP_BACKENDS),build/$(m)-$(b)))
