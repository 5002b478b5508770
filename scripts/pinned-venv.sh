# Sourced by the test scripts: `pinned_venv DIR REQUIREMENTS` makes DIR a virtualenv holding exactly
# the pinned packages of REQUIREMENTS (installed --no-deps, then `pip check` proves the set
# complete), and rebuilds it only when REQUIREMENTS changed, so repeated runs start at once.
# Needs $python (the interpreter).

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

pinned_venv() {
  local venv="$1" requirements="$2" stamp
  stamp="$(hash_of "$requirements")"
  if [ -f "$venv/.meshguard-stamp" ] && [ "$(cat "$venv/.meshguard-stamp")" = "$stamp" ]; then
    return
  fi
  echo "-- preparing $venv"
  rm -rf "$venv"
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    # Debian's python3.11 has no ensurepip without python3.11-venv: a bare virtualenv, and the
    # interpreter's own pip installs pip into it.
    rm -rf "$venv"
    "$python" -m venv --without-pip "$venv"
    "$python" -m pip --python "$venv/bin/python" install --quiet "pip==26.3"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "pip==26.3"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$requirements"
  "$venv/bin/python" -m pip check
  echo "$stamp" > "$venv/.meshguard-stamp"
}
