from rest_framework import permissions


class CanTrain(permissions.BasePermission):
    message = "Training, the model registry and batch jobs need the reviewer role."

    def has_permission(self, request, view):
        return request.user.is_authenticated and request.user.has_perm("classifier.train")
