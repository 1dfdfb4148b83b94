"""glog's log format for the ``minicaffe`` logger: the lines Caffe's tools print, which Caffe's
tools/extra/parse_log.py and extract_seconds.py and minicaffe's parse_log read. The tools
and pycaffe's ``caffe.init_log`` call ``setup_logging``."""
import datetime
import logging
import sys
import threading

# glog's severity letters; DEBUG has none in glog (VLOG prints "I").
_LETTERS = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W",
            logging.ERROR: "E", logging.CRITICAL: "F"}


class GlogFormatter(logging.Formatter):
    """``I1128 18:46:21.123456 12345 solver.py:123] message``: severity letter, month and day,
    local time with microseconds, thread id, file:line of the logging call (as glog)."""

    def format(self, record):
        t = datetime.datetime.fromtimestamp(record.created)
        letter = _LETTERS.get(record.levelno)
        if letter is None:
            letter = "I" if record.levelno < logging.WARNING else \
                "W" if record.levelno < logging.ERROR else \
                "E" if record.levelno < logging.CRITICAL else "F"
        tid = _native_id(record)
        msg = record.getMessage()
        if record.exc_info:
            msg = msg + "\n" + self.formatException(record.exc_info)
        return "%s%s %5d %s:%d] %s" % (letter, t.strftime("%m%d %H:%M:%S.%f"), tid,
                                       record.filename, record.lineno, msg)


def _native_id(record):
    # Records made in this thread get the OS thread id, as glog prints; others their ident.
    if record.thread == threading.get_ident() and hasattr(threading, "get_native_id"):
        return threading.get_native_id()
    return (record.thread or 0) % 100000


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (so redirections and pytest see it)."""

    _minicaffe_glog = True

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def setup_logging(level="INFO"):
    """Log the ``minicaffe`` logger to stderr in glog's format at ``level`` (a name such as
    "INFO" or a ``logging`` level). Calling it again replaces the handler, never doubles it.
    Returns the logger."""
    if isinstance(level, str):
        name = level.upper()
        if name not in ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL"):
            raise ValueError("unknown log level %r" % level)
        level = logging.getLevelName("WARNING" if name == "WARN" else
                                     "CRITICAL" if name == "FATAL" else name)
    log = logging.getLogger("minicaffe")
    for h in list(log.handlers):
        if getattr(h, "_minicaffe_glog", False):
            log.removeHandler(h)
    handler = _StderrHandler()
    handler.setFormatter(GlogFormatter())
    log.addHandler(handler)
    log.setLevel(level)
    return log
