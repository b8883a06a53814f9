"""The Content-Security-Policy header (Django 5.2 has none of its own): settings.
CONTENT_SECURITY_POLICY, from the environment, or a strict default: scripts from this site only,
inline styles allowed (pages use `style` attributes for bars and shades), no plugins, no framing."""

from django.conf import settings


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        policy = settings.CONTENT_SECURITY_POLICY
        if policy and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = policy
        return response
