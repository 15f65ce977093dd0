"""Files in and out on local[2]: textFile (files, directories, globs, comma lists,
minPartitions, compressed input), wholeTextFiles, pickleFile, saveAsTextFile and
saveAsPickleFile with Hadoop's output committer semantics."""

from __future__ import annotations

import glob
import gzip
import os
from fileinput import hook_compressed, input as file_input
from pathlib import Path

import pytest

from shoal.errors import FileAlreadyExists, FileNotFound
from shoal.spark import SparkContext


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def jobs_started(sc: SparkContext) -> int:
    return len(sc._driver.recorder.app["jobs"])


# --- textFile ------------------------------------------------------------------------------
def test_text_file(sc: SparkContext, tmp_path: Path) -> None:
    path = write(tmp_path / "hello.txt", "Hello world!")
    assert sc.textFile(path).collect() == ["Hello world!"]
    lines = [f"line {i} " + "x" * (i % 50) for i in range(2000)]
    big = write(tmp_path / "big.txt", "\n".join(lines) + "\n")
    assert sc.textFile(big).collect() == lines
    assert sc.textFile(big).getNumPartitions() == sc.defaultMinPartitions == 2
    for n in (1, 3, 7):
        rdd = sc.textFile(big, minPartitions=n)
        assert rdd.getNumPartitions() >= n and rdd.collect() == lines  # each line read once
    assert sc.textFile("file://" + big, 5).count() == 2000
    crlf = write(tmp_path / "crlf.txt", "a\r\nb\r\n\r\nc")
    assert sc.textFile(crlf).collect() == ["a", "b", "", "c"]
    empty = write(tmp_path / "empty.txt", "")
    assert sc.textFile(empty).collect() == []


def test_text_file_directories_globs_and_lists(sc: SparkContext, tmp_path: Path) -> None:
    d = tmp_path / "logs"
    write(d / "a.log", "a1\na2\n")
    write(d / "b.log", "b1\n")
    write(d / "c.txt", "c1\n")
    write(d / "_SUCCESS", "")
    write(d / ".hidden", "hidden\n")
    assert sorted(sc.textFile(str(d)).collect()) == ["a1", "a2", "b1", "c1"]  # no _ or . files
    assert sorted(sc.textFile(str(d / "*.log")).collect()) == ["a1", "a2", "b1"]
    assert sorted(sc.textFile(str(d / "[ab].*")).collect()) == ["a1", "a2", "b1"]
    assert sorted(sc.textFile(str(d / "{a,c}.*")).collect()) == ["a1", "a2", "c1"]
    listed = sc.textFile(f"{d / 'c.txt'},{d / 'a.log'}")
    assert listed.collect() == ["c1", "a1", "a2"]  # entries keep their order
    assert sc.textFile(str(tmp_path / "*" / "b.log")).collect() == ["b1"]
    with gzip.open(d / "z.gz", "wt") as f:
        f.write("z1\nz2\n")
    assert sc.textFile(str(d / "z.gz")).collect() == ["z1", "z2"]
    empty_dir = tmp_path / "nothing"
    empty_dir.mkdir()
    assert sc.textFile(str(empty_dir)).collect() == []


def test_missing_input_fails_before_any_task(sc: SparkContext, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-file.txt")
    rdd = sc.textFile(missing).map(str.upper)  # lazy: nothing is read yet
    before = jobs_started(sc)
    with pytest.raises(FileNotFound, match="no-such-file.txt"):
        rdd.count()
    assert jobs_started(sc) == before  # no job (and so no task) was started
    with pytest.raises(FileNotFound):
        sc.textFile(str(tmp_path / "*.nothing")).collect()
    present = write(tmp_path / "present.txt", "x\n")
    with pytest.raises(FileNotFound, match="also-missing"):
        sc.textFile(f"{present},{tmp_path / 'also-missing'}").collect()
    with pytest.raises(FileNotFound):
        sc.wholeTextFiles(missing).collect()
    with pytest.raises(FileNotFound):
        sc.pickleFile(missing).collect()
    assert jobs_started(sc) == before


def test_union_of_text_and_parallelize(sc: SparkContext, tmp_path: Path) -> None:
    write(tmp_path / "union-text.txt", "Hello")
    assert sorted(sc.union([sc.textFile(str(tmp_path)), sc.parallelize(["World!"])]).collect()) == [
        "Hello", "World!"]


def test_whole_text_files(sc: SparkContext, tmp_path: Path) -> None:
    write(tmp_path / "1.txt", "123")
    write(tmp_path / "2.txt", "xyz\nsecond line\n")
    got = sorted(sc.wholeTextFiles(str(tmp_path)).collect())
    assert got == [(f"file:{tmp_path}/1.txt", "123"), (f"file:{tmp_path}/2.txt", "xyz\nsecond line\n")]
    assert sc.wholeTextFiles(str(tmp_path), minPartitions=2).getNumPartitions() <= 2
    assert sc.wholeTextFiles(str(tmp_path / "2.*")).keys().collect() == [f"file:{tmp_path}/2.txt"]


# --- saveAsTextFile ------------------------------------------------------------------------
def test_save_as_text_file(sc: SparkContext, tmp_path: Path) -> None:
    out = str(tmp_path / "text_file1")
    sc.parallelize(range(10)).saveAsTextFile(out)
    assert "".join(sorted(file_input(glob.glob(out + "/part-0000*")))) == "0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n"
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000", "part-00001"]
    assert os.path.getsize(os.path.join(out, "_SUCCESS")) == 0
    assert sc.textFile(out).map(int).collect() == list(range(10))
    out2 = str(tmp_path / "text2_file2")
    sc.parallelize(["", "foo", "", "bar", ""]).saveAsTextFile(out2)
    assert "".join(sorted(file_input(glob.glob(out2 + "/part-0000*")))) == "\n\n\nbar\nfoo\n"
    assert sc.textFile(out2).collect() == ["", "foo", "", "bar", ""]
    out3 = str(tmp_path / "records")
    sc.parallelize([("a", 1), None, 2.5, "é"], 1).saveAsTextFile(out3)
    assert Path(out3, "part-00000").read_text("utf-8") == "('a', 1)\nNone\n2.5\né\n"


def test_save_as_text_file_refuses_an_existing_directory(sc: SparkContext, tmp_path: Path) -> None:
    out = tmp_path / "exists"
    out.mkdir()
    before = jobs_started(sc)
    with pytest.raises(FileAlreadyExists):
        sc.parallelize([1, 2]).saveAsTextFile(str(out))
    assert jobs_started(sc) == before and os.listdir(out) == []
    done = str(tmp_path / "done")
    sc.parallelize([1]).saveAsTextFile(done)
    with pytest.raises(FileAlreadyExists):
        sc.parallelize([2]).saveAsTextFile(done)
    assert sc.textFile(done).collect() == ["1"]  # the first output is untouched


def test_save_as_text_file_with_gzip(sc: SparkContext, tmp_path: Path) -> None:
    out = str(tmp_path / "text3")
    sc.parallelize(["foo", "bar"]).saveAsTextFile(out, "org.apache.hadoop.io.compress.GzipCodec")
    parts = sorted(glob.glob(out + "/part*.gz"))
    assert [os.path.basename(p) for p in parts] == ["part-00000.gz", "part-00001.gz"]
    result = sorted(file_input(parts, openhook=hook_compressed))
    assert "".join(r.decode("utf-8") if isinstance(r, bytes) else r for r in result) == "bar\nfoo\n"
    assert sc.textFile(out).collect() == ["foo", "bar"]
    with pytest.raises(ValueError, match="codec"):
        sc.parallelize([1]).saveAsTextFile(str(tmp_path / "bad"), "org.example.NoSuchCodec")


def test_failed_save_leaves_no_success_marker(sc: SparkContext, tmp_path: Path) -> None:
    def boom(x: int) -> int:
        if x == 5:
            raise ValueError("cannot write record 5")
        return x

    out = tmp_path / "failed"
    with pytest.raises(ValueError, match="record 5"):
        sc.parallelize(range(10), 2).map(boom).saveAsTextFile(str(out))
    assert not (out / "_SUCCESS").exists() and not (out / "_temporary").exists()


# --- pickle files --------------------------------------------------------------------------
def test_save_as_pickle_file_and_pickle_file(sc: SparkContext, tmp_path: Path) -> None:
    path1, path2 = str(tmp_path / "pickled1"), str(tmp_path / "pickled2")
    sc.parallelize(range(10)).saveAsPickleFile(path1, 3)
    sc.parallelize(range(-10, -5)).saveAsPickleFile(path2, 3)
    assert os.path.exists(os.path.join(path1, "_SUCCESS"))
    assert sorted(sc.pickleFile(path1, 3).collect()) == list(range(10))
    assert sorted(sc.pickleFile(path2, 4).collect()) == [-10, -9, -8, -7, -6]
    assert sorted(sc.pickleFile(f"{path1},{path2}", 5).collect()) == [-10, -9, -8, -7, -6, *range(10)]
    mixed = str(tmp_path / "mixed")
    sc.parallelize([1, 2, "spark", "rdd"]).saveAsPickleFile(mixed, 3)
    assert sorted(sc.pickleFile(mixed, 5).map(str).collect()) == ["1", "2", "rdd", "spark"]
    records = [(i, {"k": [i, str(i)]}, None) for i in range(500)]
    objects = str(tmp_path / "objects")
    sc.parallelize(records, 3).saveAsPickleFile(objects)
    assert sc.pickleFile(objects).collect() == records  # part files in order, records in order
    with pytest.raises(FileAlreadyExists):
        sc.parallelize([1]).saveAsPickleFile(objects)
