import os

from aeflow.io import write_json, write_text


def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
        write_json(tmp_path / "sub" / "b.json", {"k": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "sub" / "b.json").read_text().strip() == '{\n  "k": 1\n}'
    assert not [p for p in tmp_path.rglob("*.tmp")]
