"""The one rule for every file the scripts write (the same words as hetdro's, include/hetdro/io.h
and docs/DESIGN.md §4):

1. A file is written to NAME.tmp-PID beside it, flushed, synced and closed, every step checked,
   then renamed over NAME; on a failure the temporary file is removed and the error raised.
2. NAME may be replaced only when it is absent, an empty regular file, or a regular file that
   holds what this command writes there, recognised by its first bytes. A symbolic link as the
   last component is followed: the rule applies to, and the rename replaces, the file it names.
   A folder, FIFO, device, socket, a file the command reads, or a file with other content is
   refused as bad input (exit code 2), naming the path, what it is or starts with, and what
   was expected.
3. Every output path is checked before the long work (check_all), so a refusal costs nothing.
4. Standard output is checked (run): output lost to a failed write (a full disk, a closed pipe)
   makes the command exit 1 with a message on stderr, after it has done its work.

Exit codes: BadInput 2, WriteFailed 1.
"""

import os
import stat
import sys

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HEAD_BYTES = 65536   # enough for a CSV header line with many groups


class BadInput(Exception):
    """Bad input to a command (an option, an input file, an output path): exit code 2."""


class WriteFailed(Exception):
    """A write, sync, close or rename that failed (a full disk, an I/O error): exit code 1."""


def excerpt(data, max_bytes=32, size=None):
    """Printable ASCII kept, other bytes as \\xNN, quoted (hetdro's excerpt); `size` is the whole
    file's when `data` is its start."""
    size = len(data) if size is None else size
    shown = "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else "\\x%02x" % b
                    for b in data[:max_bytes])
    more = "... (%d bytes)" % size if size > max_bytes else ""
    return '"%s"%s' % (shown, more)


def starts_with(prefix):
    """`ours` for a file recognised by its first bytes (a PNG: PNG_SIGNATURE)."""
    return lambda head: head.startswith(prefix)


def first_line(starts, ends=b""):
    """`ours` for a text file recognised by its first line's start and end."""
    def ours(head):
        line, newline, _ = head.partition(b"\n")
        return bool(newline) and line.startswith(starts) and line.endswith(ends)
    return ours


def _kind(mode):
    if stat.S_ISREG(mode):
        return "is a file"
    if stat.S_ISDIR(mode):
        return "is a folder"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "is a character device"
    if stat.S_ISBLK(mode):
        return "is a block device"
    if stat.S_ISSOCK(mode):
        return "is a socket"
    return "is not a regular file"


class Output:
    """One file a command writes. `expected` completes "expected ..."; `ours(head)` says whether
    a file starting with `head` holds what the command writes there; `reads` are the
    [(path, what)] the command reads, never replaced."""

    def __init__(self, path, expected, ours, reads=()):
        self.path, self.expected, self.ours, self.reads = path, expected, ours, list(reads)

    def _refuse(self, what):
        return BadInput("%s: %s; expected %s" % (self.path, what, self.expected))

    def check(self):
        """The real path (a final link followed) that may be replaced; BadInput otherwise."""
        real = os.path.realpath(self.path)
        link = " (a link to %s)" % real if os.path.islink(self.path) else ""
        try:
            st = os.stat(real)
        except FileNotFoundError:
            if not os.path.isdir(os.path.dirname(real)) and link:
                raise self._refuse("is a link to %s, whose folder does not exist" % real)
            return real
        except OSError as e:
            raise self._refuse("cannot be examined%s: %s" % (link, e.strerror))
        if not stat.S_ISREG(st.st_mode):
            raise self._refuse(_kind(st.st_mode) + link)
        for path, what in self.reads:
            try:
                same = os.path.samefile(real, path)
            except OSError:
                same = False
            if same:
                raise self._refuse("is %s (%s), which this command reads%s" % (what, path, link))
        if st.st_size == 0:
            return real
        try:
            with open(real, "rb") as f:
                head = f.read(HEAD_BYTES)
        except OSError as e:
            raise self._refuse("cannot be read%s to see whether this command wrote it: %s"
                               % (link, e.strerror))
        if not self.ours(head):
            raise self._refuse("holds other content%s, starting %s, which this command did not "
                               "write" % (link, excerpt(head, size=st.st_size)))
        return real

    def write(self, data):
        """Checks the rule again (the file may have changed during the work), then writes `data`
        (bytes) through a temporary file and a rename."""
        f = AtomicFile(self.check())
        f.write(data)
        f.commit()

    def open(self):
        """An AtomicFile for writing in pieces."""
        return AtomicFile(self.check())

    def open_log(self):
        """A log, the one kind of output that grows while the command runs: checked by the rule,
        then appended to in place, so that `tail -f` follows it; a failed write surfaces at
        commit()."""
        return AppendFile(self.check())


def check_folder(path, what):
    """A folder the command writes into: absent (it will be made) or a folder; BadInput otherwise."""
    if os.path.isdir(path) or not os.path.lexists(path):
        return
    try:
        mode = os.stat(path).st_mode
        kind = _kind(mode)
    except OSError as e:
        kind = "cannot be examined: %s" % e.strerror
    raise BadInput("%s: %s %s; expected a folder (or nothing there)" % (path, what, kind))


def check_all(outputs):
    """Checks every output up front; two outputs that are one file are refused too."""
    seen = {}
    for out in outputs:
        real = out.check()
        if real in seen:
            raise BadInput("%s and %s are the same file (%s): this command writes both"
                           % (seen[real].path, out.path, real))
        seen[real] = out


class AppendFile:
    """NAME opened for appending (a log); the same write/commit/abort as AtomicFile, where
    commit() flushes, syncs and closes, and abort() only closes (what was logged stays)."""

    def __init__(self, path):
        self.path = path
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK, 0o666)
            os.set_blocking(fd, True)
        except OSError as e:
            raise BadInput("%s: cannot open it to append to it: %s" % (path, e.strerror))
        self.file = os.fdopen(fd, "ab")
        self.error = None

    def write(self, data):
        if self.error is None:
            try:
                self.file.write(data)
                self.file.flush()
            except OSError as e:
                self.error = ("writing", e)

    def commit(self):
        try:
            if self.error is not None:
                raise self.error[1]
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
        except OSError as e:
            self.abort()
            raise WriteFailed("%s: appending to it failed: %s" % (self.path, e.strerror))

    def abort(self):
        try:
            self.file.close()
        except OSError:
            pass


class AtomicFile:
    """NAME.tmp-PID open for writing; commit() flushes, syncs, closes and renames it over NAME,
    abort() removes it. A failed write is kept until commit() (which then raises), so a thread
    streaming into it never stops reading its source."""

    def __init__(self, path):
        self.path = path
        # The pid keeps two processes writing the same file from sharing a temporary file.
        self.tmp = "%s.tmp-%d" % (path, os.getpid())
        try:
            fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
        except OSError as e:
            raise BadInput("%s: cannot create %s: %s" % (path, self.tmp, e.strerror))
        self.file = os.fdopen(fd, "wb")
        self.error = None

    def write(self, data):
        if self.error is None:
            try:
                self.file.write(data)
            except OSError as e:
                self.error = ("writing", e)

    def _fail(self, step, e):
        self.abort()
        raise WriteFailed("%s: %s %s failed: %s" % (self.path, step, self.tmp, e.strerror))

    def commit(self):
        if self.error is not None:
            self._fail(*self.error)
        for step, call in (("writing", self.file.flush), ("syncing", lambda: os.fsync(self.file.fileno())),
                           ("closing", self.file.close)):
            try:
                call()
            except OSError as e:
                self._fail(step, e)
        try:
            os.replace(self.tmp, self.path)
        except OSError as e:
            self._fail("renaming", e)
        # The rename lives in the folder: sync it too (best effort; some file systems refuse).
        try:
            fd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass

    def abort(self):
        try:
            self.file.close()
        except OSError:
            pass
        try:
            os.remove(self.tmp)
        except OSError:
            pass


class _CheckedStdout:
    """sys.stdout that records its first failed write or flush instead of raising, so the work
    goes on; later output, and Python's own flush at exit, then go to /dev/null."""

    def __init__(self, stream):
        self.stream = stream
        self.error = None

    def _lost(self, e):
        self.error = e
        try:
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, self.stream.fileno())
            os.close(fd)
        except (OSError, ValueError):
            pass

    def write(self, text):
        if self.error is None:
            try:
                return self.stream.write(text)
            except OSError as e:
                self._lost(e)
        return len(text)

    def flush(self):
        if self.error is None:
            try:
                self.stream.flush()
            except OSError as e:
                self._lost(e)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def run(main, interrupted="interrupted"):
    """Runs main() with standard output checked; returns the exit code: main's (or its
    SystemExit's, as argparse raises), 2 for BadInput, 1 for WriteFailed, 130 for Ctrl-C (with
    `interrupted` as the message), and 1 when standard output lost what was printed (a message
    on stderr says so; a non-zero code is kept)."""
    out = None
    if sys.stdout is not None:
        out = sys.stdout = _CheckedStdout(sys.stdout)
    try:
        code = main()
    except SystemExit as e:
        code = e.code
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
    except BadInput as e:
        print("error: %s" % e, file=sys.stderr)
        code = 2
    except WriteFailed as e:
        print("error: %s" % e, file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("\n%s" % interrupted, file=sys.stderr)
        code = 130
    code = code or 0
    if out is not None:
        out.flush()
        if out.error is not None:
            print("error: standard output: writing failed: %s; what this command printed there "
                  "was lost (the files it wrote are not affected)" % (out.error.strerror or out.error),
                  file=sys.stderr)
            code = code or 1
    return code


# --- run folders in use (sweep.py, plot_sweep_curves.py) ---------------------------------

def held_locks():
    """{(st_dev major, minor, inode)} of the files some process holds a lock on, from /proc/locks
    (only looked at: taking a run's lock, even for a moment, could make a hetdro starting then
    refuse its folder); None when it cannot be read (not Linux)."""
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    held = set()
    for line in text.splitlines():
        for field in line.split():
            parts = field.split(":")
            if len(parts) == 3:
                try:
                    held.add((int(parts[0], 16), int(parts[1], 16), int(parts[2])))
                except ValueError:
                    pass
    return held


def lock_held(run_dir, locks):
    """True when a process holds run_dir/.lock (a hetdro training it), False when none does or
    there is no .lock, None when that cannot be told. Only looks (/proc/locks), never takes it."""
    try:
        st = os.stat(os.path.join(run_dir, ".lock"))
    except FileNotFoundError:
        return False
    except OSError:
        return None
    if locks is None:
        return None
    return (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) in locks
