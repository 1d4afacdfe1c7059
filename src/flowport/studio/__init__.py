"""The web studio: server-rendered pages that talk to the REST API only.

Pages are Jinja2 shells; their small scripts call ``/api/v1`` with the session cookie (and
its CSRF token for changes). Nothing is kept in the studio that the API does not keep.
"""

from flowport.studio.pages import build_studio

__all__ = ["build_studio"]
