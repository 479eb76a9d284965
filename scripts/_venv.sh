# Sourced by scripts/setup and scripts/lock (not run on its own). Before sourcing, the caller
# defines say() and die(). Provides:
#   find_python     sets PYTHON to python3.11 (or python3 when that is 3.11 or newer)
#   make_venv DIR   (re)creates the virtualenv DIR with $PYTHON, installing Debian's venv package
#                   first when the interpreter lacks it and we may use apt

find_python() {
    PYTHON="$(command -v python3.11 || command -v python3 || true)"
    [ -n "$PYTHON" ] || die "no python3.11 or python3 on PATH; install Python 3.11 or newer"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$PYTHON is Python $("$PYTHON" -c 'import platform; print(platform.python_version())'); PyWorkflow needs 3.11 or newer"
}

make_venv() {
    local dir="$1"
    say "creating $dir/ with $PYTHON"
    rm -rf "$dir"
    if ! "$PYTHON" -m venv "$dir" 2>/dev/null; then
        # Debian ships venv/ensurepip separately from the interpreter.
        rm -rf "$dir"
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            say "installing Debian's venv package for $PYTHON"
            local ver
            ver="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
            apt-get update -qq
            apt-get install -y -qq "python${ver}-venv" >/dev/null || apt-get install -y -qq python3-venv >/dev/null
            "$PYTHON" -m venv "$dir"
        else
            die "'$PYTHON -m venv' failed; install the venv package (e.g. apt-get install python3-venv)"
        fi
    fi
}

# pip through the machine's own configuration (indexes, find-links, certificates); the sed drops
# its warnings about local mirror folders that a machine may not have. pip's status still counts
# (callers run with pipefail).
quiet_pip() {
    local pip="$1"
    shift
    "$pip" "$@" 2>&1 | sed '/is ignored: it is neither a file nor a directory/d'
}
