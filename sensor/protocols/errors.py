"""The one error every sans-IO parser raises."""


class ParseError(ValueError):
    """The bytes are not (a valid prefix of) the protocol the parser expects.

    Parsers return ``None`` when they need more bytes, a result object when they
    parsed something, and raise only this exception for malformed input.
    """
