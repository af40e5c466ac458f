#!/usr/bin/env bash
# One-step set-up: torch, this package with every runtime dependency, the test tools, and Dassl from its repository.
#
#   bash scripts/install.sh            # torch from PyPI (CUDA build; it also runs on CPU)
#   bash scripts/install.sh --cpu      # torch's CPU-only wheels (about 1 GB instead of several GB of CUDA libraries)
#
# Environment:
#   TORCH_SPEC  torch packages to install (default: the versions the test suite is run with)
#   DASSL_SRC   a local Dassl.pytorch checkout to install instead of cloning it (offline machines)
#   DASSL_DIR   where to clone Dassl (default: .deps/Dassl.pytorch inside this repository, ignored by git)
#   DASSL_REPO  the repository to clone (default: Dassl's public GitHub repository)
# Dassl is not on PyPI. When its repository cannot be reached, everything else is still installed, the script says
# so, and the tests that need Dassl are skipped with that reason.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
DASSL_REPO=${DASSL_REPO:-https://github.com/KaiyangZhou/Dassl.pytorch.git}
DASSL_DIR=${DASSL_DIR:-.deps/Dassl.pytorch}
PIP=(python -m pip install --disable-pip-version-check)
[ -n "${CI:-}" ] && PIP+=(--quiet)

cpu=0
for arg in "$@"; do
    case "$arg" in
        --cpu) cpu=1 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument '$arg' (known: --cpu)" >&2; exit 2 ;;
    esac
done

echo "== torch ($TORCH_SPEC)"
# shellcheck disable=SC2086  # TORCH_SPEC is a list of requirement strings
if [ "$cpu" = 1 ]; then
    if ! "${PIP[@]}" --index-url https://download.pytorch.org/whl/cpu $TORCH_SPEC; then
        echo "install.sh: torch's CPU wheel index could not be reached; run without --cpu to install torch from PyPI" >&2
        exit 1
    fi
else
    "${PIP[@]}" $TORCH_SPEC
fi

echo "== clip-adapt with its runtime, Dassl's Python dependencies and the test tools"
"${PIP[@]}" -e ".[dassl,test]"

echo "== Dassl (the host framework; not on PyPI)"
if python -c "import dassl" 2>/dev/null && [ -z "${DASSL_SRC:-}" ]; then
    echo "Dassl is already installed: $(python -c 'import dassl, os; print(os.path.dirname(dassl.__file__))')"
    exit 0
fi
src=${DASSL_SRC:-$DASSL_DIR}
if [ -z "${DASSL_SRC:-}" ] && [ ! -d "$DASSL_DIR/.git" ]; then
    mkdir -p "$(dirname "$DASSL_DIR")"
    if ! GIT_TERMINAL_PROMPT=0 timeout 120 git clone --quiet --depth 1 "$DASSL_REPO" "$DASSL_DIR" 2>/dev/null; then
        rm -rf "$DASSL_DIR"
        cat >&2 <<EOF
install.sh: Dassl's repository ($DASSL_REPO) could not be reached.
  Everything else is installed. Without Dassl, train.py and the scripts cannot run, and the tests that need Dassl
  are skipped (pytest -ra prints the reason). To add it later, on a machine that has a copy of the repository:
      DASSL_SRC=/path/to/Dassl.pytorch bash scripts/install.sh
EOF
        exit 0
    fi
fi
if [ ! -f "$src/setup.py" ]; then
    echo "install.sh: $src is not a Dassl.pytorch checkout (no setup.py there)" >&2
    exit 1
fi
# --no-deps: Dassl's requirements pin old linters; what `import dassl` needs came with the [dassl] extra above.
"${PIP[@]}" --no-deps --no-build-isolation -e "$src"
python -c "import dassl" && echo "Dassl installed from $src"
