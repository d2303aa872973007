"""``qlty.base`` holds qlty's internals, which fastquilt does not reproduce. The names exist so
that test modules importing them load; calling them raises (the tests that do are listed in
tests/compat/qlty_expected_failures.txt)."""


class BaseQuilt:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("qlty.base.BaseQuilt is qlty-internal; not in fastquilt")


def normalize_border(*args, **kwargs):
    raise NotImplementedError("qlty.base.normalize_border is qlty-internal; not in fastquilt")


def validate_border_weight(*args, **kwargs):
    raise NotImplementedError(
        "qlty.base.validate_border_weight is qlty-internal; not in fastquilt")
