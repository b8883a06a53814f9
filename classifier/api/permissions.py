from rest_framework import permissions


class CanTrain(permissions.BasePermission):
    message = "Training, the model registry and batch jobs need the reviewer role."

    def has_permission(self, request, view):
        return request.user.is_authenticated and request.user.has_perm("classifier.train")


class CanSeeWorkers(permissions.BasePermission):
    message = "The workers' list needs the reviewer role or staff."

    def has_permission(self, request, view):
        user = request.user
        return user.is_authenticated and (user.is_staff or user.has_perm("classifier.train"))
