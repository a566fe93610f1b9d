"""A one-file Django project: lilush-http --wsgi django_app:application"""

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse, JsonResponse
from django.urls import path

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "change me"),
    MIDDLEWARE=[],
)


def index(request):
    return HttpResponse("hello from Django\n", content_type="text/plain")


def upload(request):
    # request.body holds CONTENT_LENGTH bytes; a chunked upload has none, so read the stream.
    data = request.body if "CONTENT_LENGTH" in request.META else request.META["wsgi.input"].read()
    return JsonResponse({"received": len(data)})


urlpatterns = [path("", index), path("upload", upload)]
application = get_wsgi_application()
