"""The path converter for database ids: 1 to 18 digits, so an id always fits a 64-bit integer
column (`<int:...>` takes any number of digits, and 99999999999999999999 is a database error)."""

from django.urls import register_converter
from django.urls.converters import IntConverter

ID_REGEX = "[0-9]{1,18}"


class IdConverter(IntConverter):
    regex = ID_REGEX


register_converter(IdConverter, "id")  # this module is imported once, by the URL modules
