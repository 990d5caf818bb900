# Sourced by the launch and benchmark scripts: which Python runs muscle_jax.
# muscle_python REPO prints PYTHON if set, else the active virtual environment's python,
# else the README's .venv in REPO, else python3.
muscle_python() {
  if [[ -n "${PYTHON:-}" ]]; then
    echo "$PYTHON"
  elif [[ -n "${VIRTUAL_ENV:-}" ]]; then
    echo "$VIRTUAL_ENV/bin/python"
  elif [[ -x "$1/.venv/bin/python" ]]; then
    echo "$1/.venv/bin/python"
  else
    echo python3
  fi
}
