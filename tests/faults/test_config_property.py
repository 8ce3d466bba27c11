"""Property: any key=value the command line can carry either resolves to a valid config or is refused as bad
input (UsageError, exit code 2, one line) - never another exception."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnmode.config import all_keys, resolve_config
from cnnmode.errors import UsageError

KEYS = sorted(all_keys())
VALUES = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                   st.text(max_size=40), st.sampled_from(["", "0", "-1", "1e309", "nan", "..", "a/b", "~", "[1, 2]",
                                                          "{a: 1}", "null", "yes", "off", "auto", "none"]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(KEYS), value=VALUES, second=st.sampled_from(KEYS), other=VALUES)
def test_any_override_validates_or_is_one_usage_error(key, value, second, other):
    overrides = [f"{key}={value}", f"{second}={other}"]
    try:
        cfg = resolve_config("generic", overrides, cuda=False, notice=lambda message: None)
    except UsageError as e:
        assert "\n" not in str(e) and str(e)
        return
    assert cfg.train.epochs >= 1 and cfg.train.batch_size >= 1 and cfg.optim.lr > 0
