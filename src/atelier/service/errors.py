"""The service's typed refusals, apart from the art layer's.

A :class:`ServiceError` is a request the product refuses for a reason the person who sent it
can act on (a style that does not exist, an amount below the minimum, a busy service); its
message is written for them. The layers above show it the way they show the art layer's
refusals about the input (:class:`atelier.art.errors.ArtError`): the API as a JSON error, the
pages as a friendly message, the CLI as one line and exit code 2. The job worker fails a job
for good on either (retrying the same input cannot help), except where it knows better
(missing weights, an outage). Product errors used to subclass ``ArtError`` so that all of this
happened; now each layer names both.
"""

from __future__ import annotations

from atelier.art.errors import ArtError


class ServiceError(Exception):
    """Base class: a refusal of the product's whose message is fit to show to the user."""


class StyleChoiceError(ServiceError):
    """The style options do not fit together (e.g. weights for a single style)."""


class BusyError(ServiceError):
    """The service is shutting down or could not do it in time; try again in a moment."""


class UnknownStyleError(StyleChoiceError):
    """A style name that is neither a filter nor a catalog style."""


class PermanentJobError(Exception):
    """A job that cannot succeed however often it is tried (the message is for the operator):
    the worker fails it at once instead of retrying."""


#: What the layers above show as it is: the art layer's refusals and the service's.
REFUSALS: tuple[type[Exception], ...] = (ArtError, ServiceError)
