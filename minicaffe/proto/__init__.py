"""caffe.proto without protoc: a small proto2 parser and the message classes built from it.

``minicaffe.proto.caffe_pb2`` is what the rest of minicaffe imports; it behaves like the module
protoc would generate for ``caffe.proto`` (message classes, ``caffe_pb2.TRAIN``,
``caffe_pb2.Phase``, nested enum values such as ``PoolingParameter.MAX``), but it is built at
import time from the ``.proto`` file that sits next to this one, so there is no generated code to
keep in sync and no protoc to install.

The parser covers the proto2 subset a schema like Caffe's uses: ``syntax``, ``package``,
``option`` (plain descriptor options), ``message`` (nested messages and enums), ``enum``,
``optional``/``required``/``repeated`` fields of scalar, message or enum type (names resolved
from the innermost scope outwards, as protoc does), ``[default = ...]``, ``[packed = ...]``,
``[deprecated = ...]``, ``[json_name = ...]`` and ``reserved``. Anything else (imports, oneofs,
maps, groups, extensions, services, proto3) is refused with a ``ProtoSyntaxError`` naming the
file, line and column. The ``FileDescriptorProto`` it produces is the one protoc writes for the
same file (``default_value`` and ``json_name`` spelled the protoc way).
"""

import os
import re

from google.protobuf import descriptor_pb2

__all__ = [
    "PROTO_PATH",
    "ProtoSyntaxError",
    "parse_proto",
    "build_file_descriptor_proto",
    "build_classes",
]

#: The schema shipped with the package.
PROTO_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "caffe.proto")

_FDP = descriptor_pb2.FieldDescriptorProto

_SCALAR_TYPES = {
    "double": _FDP.TYPE_DOUBLE,
    "float": _FDP.TYPE_FLOAT,
    "int64": _FDP.TYPE_INT64,
    "uint64": _FDP.TYPE_UINT64,
    "int32": _FDP.TYPE_INT32,
    "fixed64": _FDP.TYPE_FIXED64,
    "fixed32": _FDP.TYPE_FIXED32,
    "bool": _FDP.TYPE_BOOL,
    "string": _FDP.TYPE_STRING,
    "bytes": _FDP.TYPE_BYTES,
    "uint32": _FDP.TYPE_UINT32,
    "sfixed32": _FDP.TYPE_SFIXED32,
    "sfixed64": _FDP.TYPE_SFIXED64,
    "sint32": _FDP.TYPE_SINT32,
    "sint64": _FDP.TYPE_SINT64,
}

# Inclusive value ranges of the integer types, for checking defaults.
_INT_RANGES = {
    _FDP.TYPE_INT32: (-(2**31), 2**31 - 1),
    _FDP.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _FDP.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _FDP.TYPE_INT64: (-(2**63), 2**63 - 1),
    _FDP.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _FDP.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _FDP.TYPE_UINT32: (0, 2**32 - 1),
    _FDP.TYPE_FIXED32: (0, 2**32 - 1),
    _FDP.TYPE_UINT64: (0, 2**64 - 1),
    _FDP.TYPE_FIXED64: (0, 2**64 - 1),
}

# Types that may be declared [packed = true] (every scalar but string/bytes, plus enums).
_PACKABLE = set(_SCALAR_TYPES.values()) - {_FDP.TYPE_STRING, _FDP.TYPE_BYTES}
_PACKABLE.add(_FDP.TYPE_ENUM)

_LABELS = {
    "optional": _FDP.LABEL_OPTIONAL,
    "required": _FDP.LABEL_REQUIRED,
    "repeated": _FDP.LABEL_REPEATED,
}

_MAX_FIELD_NUMBER = 2**29 - 1
_RESERVED_NUMBERS = (19000, 19999)  # protobuf's own range


class ProtoSyntaxError(ValueError):
    """A ``.proto`` file this parser cannot read; the message starts with ``file:line:col:``."""


# --------------------------------------------------------------------------------------------
# Tokenizer

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>[ \t\r\f\v]+)
  | (?P<nl>\n)
  | (?P<line_comment>//[^\n]*)
  | (?P<block_comment>/\*.*?\*/)
  | (?P<float>(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)
  | (?P<int>0[xX][0-9A-Fa-f]+|\d+)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<symbol>[{}\[\]()<>;=,.\-+:])
    """,
    re.VERBOSE | re.DOTALL,
)

_SIMPLE_ESCAPES = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
    "\\": "\\", "'": "'", '"': '"', "?": "?",
}
_ESCAPE_RE = re.compile(r"\\(x[0-9A-Fa-f]{1,2}|[0-7]{1,3}|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|.)",
                        re.DOTALL)


class _Token:
    __slots__ = ("kind", "text", "line", "col")

    def __init__(self, kind, text, line, col):
        self.kind, self.text, self.line, self.col = kind, text, line, col

    def __repr__(self):
        return "_Token(%s, %r, %d:%d)" % (self.kind, self.text, self.line, self.col)


def _tokenize(text, filename):
    tokens = []
    pos, line, line_start = 0, 1, 0
    n = len(text)
    while pos < n:
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            if text.startswith("/*", pos):
                what = "unterminated /* comment"
            elif text[pos] in "\"'":
                what = "unterminated string literal"
            else:
                what = "unexpected character %r" % text[pos]
            raise ProtoSyntaxError("%s:%d:%d: %s" % (filename, line, pos - line_start + 1, what))
        kind = m.lastgroup
        tok_text = m.group()
        if kind == "nl":
            line += 1
            line_start = m.end()
        elif kind == "block_comment":
            newlines = tok_text.count("\n")
            if newlines:
                line += newlines
                line_start = pos + tok_text.rindex("\n") + 1
        elif kind not in ("ws", "line_comment"):
            tokens.append(_Token(kind, tok_text, line, pos - line_start + 1))
        pos = m.end()
    tokens.append(_Token("eof", "", line, pos - line_start + 1))
    return tokens


def _unescape(body):
    """The bytes of a string literal's body (between the quotes), C escapes applied.

    As in protoc, ``\\xHH`` and octal escapes are single bytes and ``\\u``/``\\U`` and
    literal characters are UTF-8."""
    out = bytearray()
    pos = 0
    for m in _ESCAPE_RE.finditer(body):
        out += body[pos:m.start()].encode("utf-8")
        pos = m.end()
        esc = m.group(1)
        if esc[0] in "xX" and len(esc) > 1:
            out.append(int(esc[1:], 16))
        elif esc[0] in "01234567":
            value = int(esc, 8)
            if value > 255:
                raise ValueError("octal escape \\%s is out of range" % esc)
            out.append(value)
        elif esc[0] in "uU" and len(esc) > 1:
            out += chr(int(esc[1:], 16)).encode("utf-8")
        elif esc in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[esc].encode("ascii")
        else:
            raise ValueError("invalid escape \\%s" % esc)
    out += body[pos:].encode("utf-8")
    return bytes(out)


def _unescape_text(body):
    try:
        return _unescape(body).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("string literal is not valid UTF-8 (use a bytes field)") from None


def _c_escape(data):
    """protoc's CEscape, used for bytes defaults."""
    out = []
    for b in data:
        c = chr(b)
        if c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        elif c in "\"'\\":
            out.append("\\" + c)
        elif 0x20 <= b < 0x7F:
            out.append(c)
        else:
            out.append("\\%03o" % b)
    return "".join(out)


def _format_double(value):
    """protoc's SimpleDtoa: the shortest of %.15g / %.17g that reads back exactly."""
    if value != value:
        return "nan"
    if value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    s = "%.15g" % value
    if float(s) != value:
        s = "%.17g" % value
    return s


def _json_name(name):
    """protoc's ToJsonName: drop underscores, upper-case the letter after each one."""
    out = []
    upper_next = False
    for c in name:
        if c == "_":
            upper_next = True
        elif upper_next:
            out.append(c.upper())
            upper_next = False
        else:
            out.append(c)
    return "".join(out)


# --------------------------------------------------------------------------------------------
# Parser


class _Parser:
    def __init__(self, text, filename):
        self.filename = filename
        self.tokens = _tokenize(text, filename)
        self.i = 0
        self.fdp = descriptor_pb2.FileDescriptorProto()
        # Fields of message/enum type, resolved once every type is known:
        # (field proto, scope, type name, type token, default tokens or None, name token)
        self.pending = []
        # fully qualified name (no leading dot) -> "message" | "enum" | "package"
        self.symbols = {}
        # fully qualified enum name -> EnumDescriptorProto
        self.enums = {}

    # -- token helpers ---------------------------------------------------------------------
    def error(self, msg, tok=None):
        tok = tok or self.tokens[self.i]
        return ProtoSyntaxError("%s:%d:%d: %s" % (self.filename, tok.line, tok.col, msg))

    def peek(self, offset=0):
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def next(self):
        tok = self.tokens[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def at(self, text):
        tok = self.tokens[self.i]
        return tok.kind in ("symbol", "ident") and tok.text == text

    def accept(self, text):
        if self.at(text):
            self.i += 1
            return True
        return False

    def expect(self, text):
        tok = self.peek()
        if not self.accept(text):
            raise self.error("expected %r, found %s" % (text, self.describe(tok)), tok)
        return tok

    @staticmethod
    def describe(tok):
        return "end of file" if tok.kind == "eof" else repr(tok.text)

    def ident(self, what="identifier"):
        tok = self.peek()
        if tok.kind != "ident":
            raise self.error("expected %s, found %s" % (what, self.describe(tok)), tok)
        self.i += 1
        return tok.text

    def integer(self, what="integer"):
        """A possibly negative integer literal (decimal, hex or octal)."""
        neg = self.accept("-")
        tok = self.peek()
        if tok.kind != "int":
            raise self.error("expected %s, found %s" % (what, self.describe(tok)), tok)
        self.i += 1
        value = _int_literal(tok.text)
        return -value if neg else value

    def string(self):
        """One or more adjacent string literals, concatenated and unescaped."""
        tok = self.peek()
        if tok.kind != "string":
            raise self.error("expected a string, found %s" % self.describe(tok), tok)
        parts = []
        while self.peek().kind == "string":
            tok = self.next()
            try:
                parts.append(_unescape_text(tok.text[1:-1]))
            except ValueError as exc:
                raise self.error(str(exc), tok) from None
        return "".join(parts)

    def full_ident(self):
        """``a.b.c`` or ``.a.b.c``; returns the text as written."""
        parts = []
        if self.accept("."):
            parts.append("")
        parts.append(self.ident("type name"))
        while self.accept("."):
            parts.append(self.ident("type name"))
        return ".".join(parts)

    # -- symbols ---------------------------------------------------------------------------
    def define(self, fq_name, kind, tok):
        if fq_name in self.symbols and not (kind == self.symbols[fq_name] == "package"):
            raise self.error('"%s" is already defined' % fq_name, tok)
        self.symbols[fq_name] = kind

    # -- grammar ---------------------------------------------------------------------------
    def parse(self):
        fdp = self.fdp
        fdp.name = os.path.basename(self.filename)
        seen_syntax = False
        while self.peek().kind != "eof":
            tok = self.peek()
            if self.accept(";"):
                continue
            if tok.text == "syntax" and tok.kind == "ident":
                if seen_syntax or self.i != 0:
                    raise self.error("'syntax' must be the first statement", tok)
                self.next()
                self.expect("=")
                stok = self.peek()
                syntax = self.string()
                if syntax != "proto2":
                    raise self.error('only syntax = "proto2" is supported, not %r' % syntax,
                                     stok)
                self.expect(";")
                seen_syntax = True
                fdp.syntax = "proto2"
            elif tok.text == "package" and tok.kind == "ident":
                self.next()
                if fdp.HasField("package"):
                    raise self.error("multiple package definitions", tok)
                fdp.package = self.full_ident()
                if fdp.package.startswith("."):
                    raise self.error("package name cannot start with '.'", tok)
                parts = fdp.package.split(".")
                for k in range(1, len(parts) + 1):
                    self.define(".".join(parts[:k]), "package", tok)
                self.expect(";")
            elif tok.text == "option" and tok.kind == "ident":
                self.next()
                self.parse_option(fdp.options)
            elif tok.text == "message" and tok.kind == "ident":
                self.next()
                self.parse_message(fdp.message_type.add(), fdp.package)
            elif tok.text == "enum" and tok.kind == "ident":
                self.next()
                self.parse_enum(fdp.enum_type.add(), fdp.package)
            elif tok.kind == "ident" and tok.text in ("import", "service", "extend"):
                raise self.error("'%s' is not supported by minicaffe's proto parser" % tok.text,
                                 tok)
            else:
                raise self.error("expected a top-level statement, found %s" % self.describe(tok),
                                 tok)
        if not seen_syntax:
            # protoc assumes proto2 (with a warning); say so in the descriptor too.
            fdp.syntax = "proto2"
        self.resolve()
        return fdp

    def parse_option(self, options_msg):
        """``name = value ;`` after the ``option`` keyword, for plain descriptor options."""
        tok = self.peek()
        if self.at("("):
            raise self.error("custom options are not supported", tok)
        name = self.ident("option name")
        self.expect("=")
        self.set_option(options_msg, name, tok)
        self.expect(";")

    def set_option(self, options_msg, name, name_tok):
        field = options_msg.DESCRIPTOR.fields_by_name.get(name)
        if field is None or _is_repeated(field) or field.message_type:
            raise self.error("unknown option %r for %s" % (name, options_msg.DESCRIPTOR.name),
                             name_tok)
        tok = self.peek()
        if field.type == field.TYPE_BOOL:
            value = self.ident("true or false")
            if value not in ("true", "false"):
                raise self.error("expected true or false, found %r" % value, tok)
            setattr(options_msg, name, value == "true")
        elif field.type == field.TYPE_STRING:
            setattr(options_msg, name, self.string())
        elif field.type == field.TYPE_ENUM:
            value = self.ident("enum value")
            if value not in field.enum_type.values_by_name:
                raise self.error("unknown value %r for option %r" % (value, name), tok)
            setattr(options_msg, name, field.enum_type.values_by_name[value].number)
        elif field.cpp_type in (field.CPPTYPE_INT32, field.CPPTYPE_INT64,
                                field.CPPTYPE_UINT32, field.CPPTYPE_UINT64):
            setattr(options_msg, name, self.integer())
        else:
            raise self.error("option %r is not supported" % name, name_tok)

    def parse_message(self, msg, scope):
        name_tok = self.peek()
        msg.name = self.ident("message name")
        fq = scope + "." + msg.name if scope else msg.name
        self.define(fq, "message", name_tok)
        self.expect("{")
        numbers = {}
        names = {}
        while not self.accept("}"):
            tok = self.peek()
            if tok.kind == "eof":
                raise self.error("reached end of file inside message %s" % msg.name, tok)
            if self.accept(";"):
                continue
            word = tok.text if tok.kind == "ident" else None
            if word in _LABELS:
                self.next()
                self.parse_field(msg, fq, _LABELS[word], numbers, names, tok)
            elif word == "message":
                self.next()
                self.parse_message(msg.nested_type.add(), fq)
            elif word == "enum":
                self.next()
                self.parse_enum(msg.enum_type.add(), fq)
            elif word == "reserved":
                self.next()
                self.parse_reserved(msg, tok, enum=False)
            elif word == "option":
                self.next()
                self.parse_option(msg.options)
            elif word in ("oneof", "map", "extensions", "extend", "group"):
                raise self.error("'%s' is not supported by minicaffe's proto parser" % word, tok)
            elif tok.kind == "ident" and (tok.text in _SCALAR_TYPES or
                                          self.peek(1).kind == "ident"):
                raise self.error("expected 'optional', 'required' or 'repeated' before field "
                                 "(proto2 needs a label)", tok)
            else:
                raise self.error("expected a field, message or enum, found %s"
                                 % self.describe(tok), tok)
        self.check_reserved(msg, numbers, names, name_tok)

    def parse_field(self, msg, scope, label, numbers, names, label_tok):
        field = msg.field.add()
        field.label = label
        type_tok = self.peek()
        if type_tok.kind == "ident" and type_tok.text in _SCALAR_TYPES:
            self.next()
            field.type = _SCALAR_TYPES[type_tok.text]
            type_name = None
        else:
            if type_tok.kind == "ident" and type_tok.text == "group":
                raise self.error("groups are not supported", type_tok)
            type_name = self.full_ident()
        name_tok = self.peek()
        field.name = self.ident("field name")
        field.json_name = _json_name(field.name)
        self.expect("=")
        num_tok = self.peek()
        field.number = self.integer("field number")
        if not 1 <= field.number <= _MAX_FIELD_NUMBER:
            raise self.error("field number %d out of range 1..%d"
                             % (field.number, _MAX_FIELD_NUMBER), num_tok)
        if _RESERVED_NUMBERS[0] <= field.number <= _RESERVED_NUMBERS[1]:
            raise self.error("field numbers %d..%d are reserved for protobuf itself"
                             % _RESERVED_NUMBERS, num_tok)
        if field.number in numbers:
            raise self.error('field number %d has already been used in "%s" by field "%s"'
                             % (field.number, scope, numbers[field.number]), num_tok)
        if field.name in names:
            raise self.error('"%s" is already defined in "%s"' % (field.name, scope), name_tok)
        numbers[field.number] = field.name
        names[field.name] = field.number

        default = None
        if self.accept("["):
            while True:
                opt_tok = self.peek()
                if self.at("("):
                    raise self.error("custom options are not supported", opt_tok)
                opt = self.ident("option name")
                self.expect("=")
                if opt == "default":
                    if default is not None:
                        raise self.error('already set option "default"', opt_tok)
                    default = self.default_tokens(opt_tok)
                elif opt == "json_name":
                    field.json_name = self.string()
                else:
                    self.set_option(field.options, opt, opt_tok)
                if not self.accept(","):
                    break
            self.expect("]")
        self.expect(";")

        if label == _FDP.LABEL_REPEATED and default is not None:
            raise self.error("repeated fields cannot have default values", default[0])
        if field.options.packed and label != _FDP.LABEL_REPEATED:
            raise self.error("[packed = true] can only be specified for repeated primitive "
                             "fields", name_tok)
        if type_name is None:
            if field.options.packed and field.type not in _PACKABLE:
                raise self.error("[packed = true] can only be specified for repeated primitive "
                                 "fields", name_tok)
            if default is not None:
                field.default_value = self.format_default(field.type, default)
        else:
            self.pending.append((field, scope, type_name, type_tok, default, name_tok))

    def default_tokens(self, opt_tok):
        """The tokens of a default value: ``-``? followed by one literal (or strings)."""
        start = self.i
        self.accept("-")
        tok = self.peek()
        if tok.kind == "string":
            if self.i != start:
                raise self.error("expected a number after '-'", tok)
            while self.peek().kind == "string":
                self.next()
        elif tok.kind in ("int", "float", "ident"):
            self.next()
        else:
            raise self.error("expected a default value, found %s" % self.describe(tok), tok)
        return self.tokens[start:self.i]

    def format_default(self, ftype, toks):
        """The default as protoc stores it in ``default_value``."""
        neg = toks[0].kind == "symbol"
        tok = toks[-1]
        if ftype in (_FDP.TYPE_FLOAT, _FDP.TYPE_DOUBLE):
            if tok.kind == "float":
                value = float(tok.text)
            elif tok.kind == "int":
                value = float(_int_literal(tok.text))
            elif tok.kind == "ident" and tok.text in ("inf", "nan"):
                value = float(tok.text)
            else:
                raise self.error("expected a number, found %s" % self.describe(tok), tok)
            return _format_double(-value if neg else value)
        if ftype in _INT_RANGES:
            if tok.kind != "int":
                raise self.error("expected an integer, found %s" % self.describe(tok), tok)
            value = _int_literal(tok.text)
            value = -value if neg else value
            lo, hi = _INT_RANGES[ftype]
            if not lo <= value <= hi:
                raise self.error("integer %d out of range for this field" % value, tok)
            return str(value)
        if ftype == _FDP.TYPE_BOOL:
            if neg or tok.kind != "ident" or tok.text not in ("true", "false"):
                raise self.error("expected true or false, found %s" % self.describe(tok), tok)
            return tok.text
        if ftype in (_FDP.TYPE_STRING, _FDP.TYPE_BYTES):
            if tok.kind != "string":
                raise self.error("expected a string, found %s" % self.describe(tok), tok)
            try:
                value = b"".join(_unescape(t.text[1:-1]) for t in toks)
                if ftype == _FDP.TYPE_BYTES:
                    return _c_escape(value)
                return value.decode("utf-8")
            except (ValueError, UnicodeDecodeError) as exc:
                raise self.error(str(exc), tok) from None
        if ftype == _FDP.TYPE_ENUM:
            if neg or tok.kind != "ident":
                raise self.error("expected an enum value name, found %s" % self.describe(tok),
                                 tok)
            return tok.text
        raise self.error("messages cannot have default values", toks[0])

    def parse_enum(self, enum, scope):
        name_tok = self.peek()
        enum.name = self.ident("enum name")
        fq = scope + "." + enum.name if scope else enum.name
        self.define(fq, "enum", name_tok)
        self.enums[fq] = enum
        self.expect("{")
        by_number = {}
        while not self.accept("}"):
            tok = self.peek()
            if tok.kind == "eof":
                raise self.error("reached end of file inside enum %s" % enum.name, tok)
            if self.accept(";"):
                continue
            if tok.kind == "ident" and tok.text == "option":
                self.next()
                self.parse_option(enum.options)
                continue
            if tok.kind == "ident" and tok.text == "reserved":
                self.next()
                self.parse_reserved(enum, tok, enum=True)
                continue
            value = enum.value.add()
            value.name = self.ident("enum value name")
            # C++ scoping: enum values are siblings of their enum, not children of it.
            self.define(scope + "." + value.name if scope else value.name, "value", tok)
            self.expect("=")
            num_tok = self.peek()
            value.number = self.integer("enum value number")
            if not -(2**31) <= value.number < 2**31:
                raise self.error("enum value %d out of int32 range" % value.number, num_tok)
            if self.accept("["):
                while True:
                    opt_tok = self.peek()
                    opt = self.ident("option name")
                    self.expect("=")
                    self.set_option(value.options, opt, opt_tok)
                    if not self.accept(","):
                        break
                self.expect("]")
            self.expect(";")
            by_number.setdefault(value.number, []).append(value.name)
        if not enum.value:
            raise self.error("enum %s must have at least one value" % enum.name, name_tok)
        if not enum.options.allow_alias:
            for number, value_names in by_number.items():
                if len(value_names) > 1:
                    raise self.error('"%s" uses the same enum value as "%s" (set option '
                                     'allow_alias = true to allow this)'
                                     % (value_names[1], value_names[0]), name_tok)
        self.check_reserved(enum, by_number, {v.name: v.number for v in enum.value}, name_tok)

    def parse_reserved(self, container, tok, enum):
        """``reserved 2, 15, 9 to 11, 40 to max;`` or ``reserved "foo", "bar";``."""
        max_value = 2**31 - 1 if enum else _MAX_FIELD_NUMBER
        if self.peek().kind == "string":
            while True:
                container.reserved_name.append(self.string())
                if not self.accept(","):
                    break
        else:
            while True:
                start = self.integer("field number")
                end = start
                if self.accept("to"):
                    if self.accept("max"):
                        end = max_value
                    else:
                        end = self.integer("field number")
                if end < start:
                    raise self.error("reserved range end is before its start", tok)
                rng = container.reserved_range.add()
                rng.start = start
                # Message ranges are half-open in descriptors, enum ranges closed.
                rng.end = end if enum else end + 1
                if not self.accept(","):
                    break
        self.expect(";")

    def check_reserved(self, container, numbers, names, tok):
        closed = isinstance(container, descriptor_pb2.EnumDescriptorProto)
        for number in numbers:
            for rng in container.reserved_range:
                if rng.start <= number < rng.end + (1 if closed else 0):
                    raise self.error("number %d in %s is reserved" % (number, container.name),
                                     tok)
        for name in names:
            if name in container.reserved_name:
                raise self.error('name "%s" in %s is reserved' % (name, container.name), tok)

    # -- type resolution -------------------------------------------------------------------
    def lookup_type(self, name, scope):
        """protoc's relative lookup: the first component from the innermost scope outwards."""
        if name.startswith("."):
            full = name[1:]
            return full if self.symbols.get(full) in ("message", "enum") else None
        first = name.split(".", 1)[0]
        while True:
            candidate = scope + "." + first if scope else first
            kind = self.symbols.get(candidate)
            if kind is not None and (kind in ("message", "package") or
                                     (kind == "enum" and first == name)):
                full = scope + "." + name if scope else name
                if self.symbols.get(full) in ("message", "enum"):
                    return full
                if kind != "package":
                    return None  # protoc stops at the first aggregate that matches
            if not scope:
                return None
            scope = scope.rpartition(".")[0]

    def resolve(self):
        for field, scope, type_name, type_tok, default, name_tok in self.pending:
            full = self.lookup_type(type_name, scope)
            if full is None:
                raise self.error('"%s" is not defined' % type_name, type_tok)
            field.type_name = "." + full
            if self.symbols[full] == "enum":
                field.type = _FDP.TYPE_ENUM
                if default is not None:
                    value = self.format_default(_FDP.TYPE_ENUM, default)
                    if value not in [v.name for v in self.enums[full].value]:
                        raise self.error('enum type "%s" has no value named "%s"'
                                         % (full, value), default[-1])
                    field.default_value = value
            else:
                field.type = _FDP.TYPE_MESSAGE
                if default is not None:
                    raise self.error("messages cannot have default values", default[0])
                if field.options.packed:
                    raise self.error("[packed = true] can only be specified for repeated "
                                     "primitive fields", name_tok)


def _is_repeated(field_desc):
    # FieldDescriptor.label is gone in protobuf 7; is_repeated is missing before 5.
    if hasattr(field_desc, "is_repeated"):
        return field_desc.is_repeated
    return field_desc.label == field_desc.LABEL_REPEATED


def _int_literal(text):
    if text[:2] in ("0x", "0X"):
        return int(text[2:], 16)
    if len(text) > 1 and text[0] == "0":
        return int(text[1:], 8)
    return int(text)


def parse_proto(text, filename="caffe.proto"):
    """Parse proto2 source ``text`` into a ``FileDescriptorProto`` named ``basename(filename)``.

    Raises ``ProtoSyntaxError`` ("file:line:col: what") for anything it cannot read.
    """
    return _Parser(text, filename).parse()


def build_file_descriptor_proto(path=PROTO_PATH):
    """Read and parse the ``.proto`` file at ``path`` (default: minicaffe's caffe.proto)."""
    with open(path, encoding="utf-8") as f:
        return parse_proto(f.read(), path)


# --------------------------------------------------------------------------------------------
# Message classes


def _allow_oversize_protos():
    """Let the C++/upb backends read messages as large as Caffe does (up to 2 GB).

    * cpp backend: ``SetAllowOversizeProtos`` lifts the 64 MB total-size and the recursion
      limits of ``ParseFromString``; without it large .caffemodel files fail to decode.
    * upb backend: the call exists for compatibility and raises upb's nesting-depth limit;
      upb has no total-size limit of its own besides the 2 GB wire-format maximum.
    * pure-Python backend: there is no limit to lift (it is only slow on big models).
    Returns the backend name.
    """
    try:
        from google.protobuf.internal import api_implementation
        impl = api_implementation.Type()
    except ImportError:  # pragma: no cover - very old protobuf
        return "python"
    module = None
    try:
        if impl == "cpp":
            from google.protobuf.pyext import _message as module
        elif impl == "upb":
            from google._upb import _message as module
    except ImportError:  # pragma: no cover
        module = None
    setter = getattr(module, "SetAllowOversizeProtos", None)
    if setter is not None:
        setter(True)
    return impl


def _message_class_getter(pool):
    from google.protobuf import message_factory
    get = getattr(message_factory, "GetMessageClass", None)
    if get is not None:  # protobuf >= 4.22
        return get
    factory = message_factory.MessageFactory(pool)  # protobuf 3.20 - 4.21
    return factory.GetPrototype


def build_classes(fdp=None, module_name=None):
    """Build the message classes of ``fdp`` (default: caffe.proto) in a private pool.

    Returns a dict shaped like a protoc-generated module's namespace: ``DESCRIPTOR`` (the
    FileDescriptor), one class per top-level message, an ``EnumTypeWrapper`` per top-level
    enum and every top-level enum value as an int (e.g. ``TRAIN``). ``module_name`` becomes
    the classes' ``__module__`` (for reprs and pickling by reference).
    """
    from google.protobuf import descriptor_pool
    from google.protobuf.internal import enum_type_wrapper

    if fdp is None:
        fdp = build_file_descriptor_proto()
    _allow_oversize_protos()
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(fdp.SerializeToString())
    file_desc = pool.FindFileByName(fdp.name)
    get_class = _message_class_getter(pool)

    def attach_nested(cls, desc):
        # protoc's modules expose nested messages as class attributes (Outer.Inner).
        for nested in desc.nested_types:
            nested_cls = get_class(nested)
            if not hasattr(cls, nested.name):
                try:
                    setattr(cls, nested.name, nested_cls)
                except (AttributeError, TypeError):  # pragma: no cover
                    pass
            attach_nested(nested_cls, nested)

    namespace = {"DESCRIPTOR": file_desc}
    for msg in fdp.message_type:
        desc = pool.FindMessageTypeByName(_qualify(fdp.package, msg.name))
        cls = get_class(desc)
        if module_name and getattr(cls, "__module__", None) != module_name:
            try:
                cls.__module__ = module_name
            except (AttributeError, TypeError):  # pragma: no cover
                pass
        attach_nested(cls, desc)
        namespace[msg.name] = cls
    for enum in fdp.enum_type:
        desc = pool.FindEnumTypeByName(_qualify(fdp.package, enum.name))
        namespace[enum.name] = enum_type_wrapper.EnumTypeWrapper(desc)
        for value in desc.values:
            namespace[value.name] = value.number
    return namespace


def _qualify(package, name):
    return package + "." + name if package else name
