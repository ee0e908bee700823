"""Records are written whole or not at all, and a damaged one is named, not a traceback."""

import os
import stat

import pytest

from mobile_pirl_tf.core import records


def test_a_write_that_fails_leaves_the_old_record_and_no_temporary_file(tmp_path):
    path = str(tmp_path / "run.json")
    records.write_json(path, {"epochs": 1})
    with pytest.raises(RuntimeError):
        with records.atomic_write(path) as f:
            f.write('{"epochs": ')
            raise RuntimeError("killed mid-write")
    assert records.read_json(path) == {"epochs": 1}
    assert os.listdir(tmp_path) == ["run.json"]


def test_a_library_writes_through_a_temporary_path_with_the_same_extension(tmp_path):
    path = str(tmp_path / "features.npy")
    with records.atomic_path(path) as tmp:
        assert tmp.endswith(".npy") and os.path.dirname(tmp) == str(tmp_path)
        assert records.TMP_SUFFIX in os.path.basename(tmp)
        with open(tmp, "wb") as f:
            f.write(b"data")
    assert open(path, "rb").read() == b"data" and os.listdir(tmp_path) == ["features.npy"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask  # as open() would make it


@pytest.mark.parametrize("text, reason", [("", "empty"), ('{"a": 1', "not JSON"),
                                          (b"\xff\xfe", "not text")])
def test_a_damaged_record_is_named_and_can_be_set_aside(tmp_path, text, reason):
    path = str(tmp_path / "history.json")
    with open(path, "wb") as f:
        f.write(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(records.DamagedRecord, match=reason) as e:
        records.read_json(path)
    assert path in str(e.value) and "\n" not in str(e.value)
    assert records.set_aside(path) == path + ".damaged" and not os.path.exists(path)
    assert records.read_json(path, default={}) == {}
