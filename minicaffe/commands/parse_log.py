"""``tools/parse_log``: a training log to two CSV tables, as Caffe's tools/extra/parse_log.py.

    tools/parse_log LOGFILE OUTPUT_DIR [--delimiter ,] [--verbose]

writes ``OUTPUT_DIR/<log basename>.train`` and ``.test`` with the columns NumIters, Seconds,
LearningRate and one per net output ("Train net output #k: name = v" lines), one row per
display / test pass. Caffe's rules (its parse_log.py is Python 2 only):

- Seconds count from the first line containing "Solving"; time stamps come from the glog
  prefix ``Lmmdd hh:mm:ss.uuuuuu``, the year from the file's ctime (a log that crosses New
  Year moves to the next year when the month goes back). Lines up to the "Solving" line and
  before the first "Iteration N" are ignored; lines without a time stamp are skipped.
- LearningRate is the last ``lr = `` seen (Caffe logs it after the outputs, so it lags one
  display); the first row borrows the second row's rate.
- A row is complete when it has as many columns as the first row.

Differences, on purpose: no "Solving" line is an error (exit 2) instead of empty output;
a pending first row is written at the end (Caffe drops a log's only test pass); the start
year is taken one back when the ctime year would put "Solving" in the future; NumIters is
written as an integer (Caffe writes 100.0).
"""
import argparse
import csv
import datetime
import os
import re
import sys

from minicaffe.errors import CaffeError

from ._cli import run

__all__ = ["LogFormatError", "parse_log", "save_csv_files", "write_csv",
           "extract_datetime_from_line", "get_log_created_year", "main"]

REGEX_ITERATION = re.compile(r"Iteration (\d+)")
REGEX_TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)")
REGEX_TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)")
REGEX_LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")
# the solver's total loss: "Iteration 20 (9.1 iter/s, 0.55s/20 iters), loss = 2.9, ETA 0:03",
# Caffe's "Iteration 20, loss = 2.9" (BVLC's plot_training_log.py "Train loss")
REGEX_TOTAL_LOSS = re.compile(r"Iteration (\d+)(?: \([^)]*\))?, loss = "
                              r"([-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf))")
# glog: "I0210 13:39:22.381027 25210 solver.cpp:204] ..."
_GLOG_TIME = re.compile(r"[A-Za-z](\d\d)(\d\d)\s+(\d\d?):(\d\d):(\d\d)(?:\.(\d{1,6}))?(?:\s|$)")


class LogFormatError(CaffeError):
    """A log parse_log cannot read (no "Solving" line, no time stamp on it)."""


def extract_datetime_from_line(line, year):
    """The ``datetime`` of a glog-prefixed line (``year`` supplies the year); ValueError when
    the line does not start with a glog time stamp."""
    m = _GLOG_TIME.match(line.strip())
    if not m:
        raise ValueError("no glog time stamp in %r" % line[:40])
    month, day, hour, minute, second = (int(g) for g in m.groups()[:5])
    micro = int((m.group(6) or "0").ljust(6, "0"))
    return datetime.datetime(year, month, day, hour, minute, second, micro)


def get_log_created_year(path):
    """The year of the file's ctime (glog lines carry no year)."""
    return datetime.datetime.fromtimestamp(os.path.getctime(path)).year


def _row_done(row, rows, regex, line, iteration, seconds, lr):
    """Caffe's parse_line_for_net_output: add an output to the open row, push full rows."""
    m = regex.search(line)
    if m:
        if row is None or row["NumIters"] != iteration:
            if row is not None:
                rows.append(row)
            row = {"NumIters": iteration, "Seconds": seconds, "LearningRate": lr}
        row[m.group(2)] = float(m.group(3))
    if row is not None and rows and len(row) == len(rows[0]):
        rows.append(row)
        row = None
    return row


def parse_log(path, total_loss=False):
    """Parse a training log: ``(train_rows, test_rows)``, lists of dicts whose keys are
    NumIters (int), Seconds, LearningRate and the output names, in column order. With
    ``total_loss`` a third list, the solver's total loss (smoothed over ``average_loss``
    iterations, Caffe's rule): ``{"NumIters", "Seconds", "loss"}`` per ``loss =`` line.

    Raises LogFormatError when the log has no "Solving" line (or it has no time stamp),
    OSError when it cannot be read."""
    year = get_log_created_year(path)
    ctime = datetime.datetime.fromtimestamp(os.path.getctime(path))
    with open(path, errors="replace") as f:
        lines = iter(f)
        start = None
        for line in lines:
            if "Solving" in line:
                try:
                    start = extract_datetime_from_line(line, year)
                except ValueError:
                    raise LogFormatError(
                        "%s: the \"Solving\" line has no glog time stamp (Lmmdd hh:mm:ss.uuuuuu): "
                        "%s" % (path, line.strip()[:80])) from None
                break
        if start is None:
            raise LogFormatError(
                "%s: no line containing \"Solving\"; parse_log measures Seconds from the "
                "solver's \"Solving <net>\" line, so it needs the glog-prefixed log of a "
                "training run (tools/train or caffe train)" % path)
        if start > ctime + datetime.timedelta(days=1):
            year -= 1  # the log was started the year before its ctime
            start = start.replace(year=year)
        last = start
        iteration, lr = -1, float("nan")
        train, test, total = [], [], []
        train_row = test_row = None
        for line in lines:
            m = REGEX_ITERATION.search(line)
            if m:
                iteration = int(m.group(1))
            if iteration == -1:
                continue
            try:
                when = extract_datetime_from_line(line, year)
            except ValueError:
                continue  # a line without the glog prefix (a wrapped message, a resume)
            if when.month < last.month:
                year += 1
                when = when.replace(year=year)
            last = when
            seconds = (when - start).total_seconds()
            m = REGEX_LEARNING_RATE.search(line)
            if m:
                lr = float(m.group(1))
            m = REGEX_TOTAL_LOSS.search(line)
            if m:
                total.append({"NumIters": iteration, "Seconds": seconds, "loss": float(m.group(2))})
            train_row = _row_done(train_row, train, REGEX_TRAIN_OUTPUT, line, iteration,
                                  seconds, lr)
            test_row = _row_done(test_row, test, REGEX_TEST_OUTPUT, line, iteration,
                                 seconds, lr)
    for row, rows in ((train_row, train), (test_row, test)):
        if row is not None and not rows:
            rows.append(row)
        if len(rows) > 1:
            rows[0]["LearningRate"] = rows[1]["LearningRate"]
    return (train, test, total) if total_loss else (train, test)


def write_csv(path, rows, delimiter=",", verbose=False):
    """Write ``rows`` (dicts, columns from the first) to ``path``; nothing when empty."""
    if not rows:
        if verbose:
            print("Not writing %s; no lines to write" % path)
        return False
    fields = list(rows[0].keys())
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=delimiter, lineterminator="\n")
        w.writerow(fields)
        for row in rows:
            w.writerow([_fmt(row.get(k, "")) for k in fields])
    if verbose:
        print("Wrote %s" % path)
    return True


def _fmt(v):
    return repr(v) if isinstance(v, float) else str(v)


def save_csv_files(logfile_path, output_dir, train_rows, test_rows, delimiter=",",
                   verbose=False):
    """Write ``<output_dir>/<log basename>.train`` and ``.test``; returns the paths written."""
    base = os.path.join(output_dir, os.path.basename(logfile_path))
    written = []
    for suffix, rows in ((".train", train_rows), (".test", test_rows)):
        if write_csv(base + suffix, rows, delimiter, verbose):
            written.append(base + suffix)
    return written


def build_parser():
    p = argparse.ArgumentParser(
        prog="parse_log",
        description="Parse a training log into <log>.train and <log>.test CSV files "
                    "(NumIters, Seconds, LearningRate, net outputs).")
    p.add_argument("logfile_path", metavar="LOGFILE", help="training log (glog format)")
    p.add_argument("output_dir", metavar="OUTPUT_DIR", help="directory for the CSV files")
    p.add_argument("--delimiter", default=",",
                   help="column delimiter, one character ('\\t' for a tab); default ','")
    p.add_argument("--verbose", action="store_true", help="say which files were written")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return p


def _parse_log_cmd(args):
    delimiter = "\t" if args.delimiter in ("\\t", "tab") else args.delimiter
    if len(delimiter) != 1:
        raise CaffeError("--delimiter must be one character, got %r" % args.delimiter)
    train, test = parse_log(args.logfile_path)
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise CaffeError("%s is not a directory" % args.output_dir)
    os.makedirs(args.output_dir, exist_ok=True)
    save_csv_files(args.logfile_path, args.output_dir, train, test, delimiter, args.verbose)
    if not train and not test:
        print("parse_log: warning: %s has no \"Train/Test net output\" lines after "
              "\"Solving\"; no CSV written" % args.logfile_path, file=sys.stderr)
    return 0


def main(argv=None):
    return run(_parse_log_cmd, argv, parser=build_parser())
