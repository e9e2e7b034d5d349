"""Files that are either whole or absent: write to a temporary name beside the target, flush to
disk, rename over it. An OSError that names no file (a full disk: "No space left on device")
is raised again naming the file being written.

    write_atomic("out/val.bin", ids.tofile)        # write(f) gets the open binary file
"""
import os


def named_error(error, path):
    """error (an OSError) as the same kind of OSError naming path when it names no file."""
    if error.filename is not None:
        return error
    if error.errno is None:  # (NumPy's tofile: "65536 requested and 0 written")
        return OSError(f"{error} (writing {path})")
    return type(error)(error.errno, f"{error.strerror} (writing {path})")


def stage(path, write):
    """write(binary file) to PATH.<pid>.tmp beside path and fsync it; returns that name. On any
    error the temporary file is removed (an OSError names path)."""
    tmp = f"{os.fspath(path)}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        _remove(tmp)
        raise named_error(e, path) from None
    except BaseException:
        _remove(tmp)
        raise
    return tmp


def write_atomic(path, write):
    """write(binary file) to PATH.<pid>.tmp beside path, fsync it, rename it to path. On any
    error the temporary file is removed and path is as it was."""
    path = os.fspath(path)
    tmp = stage(path, write)
    try:
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise named_error(e, path) from None


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
