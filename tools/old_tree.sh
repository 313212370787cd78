#!/bin/sh
# An earlier tree of kampx, built and runnable beside the current one, for an interleaved
# A/B on the wire (docs/performance.md, Reproduce):
#   tools/old_tree.sh COMMIT /tmp/oldtree
#   python3 bench.py --target kampx --kampx-bin /tmp/oldtree/kampx-bin ...   (the old tree)
#   python3 bench.py --target kampx --kampx-bin .venv/bin/kampx ...          (this one)
# A git worktree at COMMIT, its extensions built in place with this checkout's venv, and
# DIR/kampx-bin, which runs that tree's kampx (its directory first on sys.path, ahead of
# the editable install; the workers are forked, so they run it too). Remove it with
# `git worktree remove DIR`.
set -e
commit=$1
dir=$2
[ -n "$commit" ] && [ -n "$dir" ] || { echo "usage: $0 COMMIT DIR" >&2; exit 2; }
here="$(cd "$(dirname "$0")/.." && pwd)"
py="$here/.venv/bin/python"
git -C "$here" worktree add --detach "$dir" "$commit"
cd "$dir"
# the venv's setuptools may refuse the pyproject.toml that pip's isolated build accepts;
# build_ext needs only setup.py
mv pyproject.toml pyproject.toml.aside
"$py" setup.py -q build_ext --inplace -j 2 || { mv pyproject.toml.aside pyproject.toml; exit 1; }
mv pyproject.toml.aside pyproject.toml
cat > kampx-bin <<EOS
#!/bin/sh
exec "$py" -c "import sys, runpy; sys.path.insert(0, '$dir'); sys.argv[0] = 'kampx'; runpy.run_module('kampx', run_name='__main__', alter_sys=True)" "\$@"
EOS
chmod +x kampx-bin
echo "$dir/kampx-bin runs kampx at $(git rev-parse --short HEAD)"
