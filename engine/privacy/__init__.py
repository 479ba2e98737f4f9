"""Privacy: per-request consent, pseudonymous ids at rest, and erasure (ForgetUser).

Other features that keep or log per-user data ask :class:`PrivacyPolicy` once per request
(:meth:`PrivacyPolicy.resolve` gives a :class:`Subject`: ``use_state``, ``loggable_user_id``)
and register an eraser with :class:`Erasure` (``extra``) so ForgetUser reaches their files.
"""

from engine.privacy.erasure import Erasure
from engine.privacy.policy import CONTEXT_ONLY, PERSONALISED, PrivacyPolicy, Subject

__all__ = ["CONTEXT_ONLY", "PERSONALISED", "Erasure", "PrivacyPolicy", "Subject"]
