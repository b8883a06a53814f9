"""Page numbers as the schema documents them: a whole number (or "last"); DRF on its own reads
an empty or repeated `page` as page 1."""

from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination


class StrictPageNumberPagination(PageNumberPagination):
    def get_page_number(self, request, paginator):
        values = request.query_params.getlist(self.page_query_param)
        if values and (len(values) > 1 or not (values[0].isdigit() or values[0] in self.last_page_strings)):
            raise NotFound("Invalid page: give one whole number.")
        return super().get_page_number(request, paginator)
