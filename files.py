"""
Files written whole or not at all, and JSONL read with errors a user can act on.

  write_atomic(path, data)   a reader sees the old file or the new one, never half of one: the data goes to a
                             temporary name in the same folder, then one rename puts it in place
  append_line(f, obj)        one JSON row appended and on disk (flushed, fsync'd) before the caller goes on
  read_appended(path)        those rows back, a last line cut short by a kill dropped (a run resumes from there)
  read_jsonl(path)           the (line number, object) pairs of a JSONL file (.gz too); a UserError naming the file,
                             the line and the fix when it is not UTF-8, cannot be read, or a line is not JSON
  sha256_file(path)          the checksum every checkpoint file is kept under (checkpoints.py)
"""
import gzip
import hashlib
import json
import os
import tempfile
import zlib

from errors import UserError


def write_atomic(path, data):
    """Write `data` (str, bytes, or a function that writes a file at the path it is given) to `path` through a
    temporary file in the same folder, renamed into place; the temporary file never outlives a failure."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
        else:
            with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w", **({} if isinstance(data, bytes) else
                                                                             {"encoding": "utf-8"})) as f:
                f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def append_line(f, obj):
    """Append one JSON object as a line to the open text file f, and make it durable before returning."""
    f.write(json.dumps(obj, default=str, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())


def read_appended(path):
    """The rows append_line wrote to `path`. A last line cut short by a kill is dropped, and cut from the file, so
    the next append starts a whole line; a bad line before the end is a UserError naming it."""
    rows, good = [], 0
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if any(rest.strip() for rest in lines[i + 1:]):
                    raise UserError(f"{path}: line {i + 1} is not JSON; pass --overwrite to start again") from None
                break
        good += len(line) + 1
    if good < len(data):
        with open(path, "r+b") as f:
            f.truncate(good)
    return rows


def read_jsonl(path):
    """[(line number, object)] of the non-blank lines of a JSONL file (gzip-compressed when it ends with .gz)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start}); pass a UTF-8 JSONL file") from None
    except (OSError, EOFError, zlib.error) as e:  # missing, unreadable, or (gzip) not a gzip file or cut short
        raise UserError(f"{path}: cannot be read ({e.strerror if isinstance(e, OSError) and e.strerror else e}); "
                        f"pass an intact, readable file") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                raise UserError(f"{path}: line {n} is not JSON ({e.msg}); pass a JSONL file, one object a line") \
                    from None
    return rows


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
