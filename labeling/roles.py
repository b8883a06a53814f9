"""The roles as groups of permissions. Used by the data migration and, idempotently, by code
that must not depend on migration data still being there (test flushes, a wiped auth table)."""

ROLES = {
    "uploader": [("classifier", "add_image")],
    "annotator": [("classifier", "add_image"), ("classifier", "view_image"), ("labeling", "annotate")],
    "reviewer": [("classifier", "add_image"), ("classifier", "view_image"), ("labeling", "annotate"),
                 ("labeling", "review"), ("classifier", "train")],
}


def ensure_roles(Group, Permission, roles: dict | None = None) -> dict:
    """name -> Group with exactly its permissions; takes model classes so migrations can pass
    their historical models (and the roles as they were at that migration)."""
    groups = {}
    for name, perms in (roles or ROLES).items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(
            *[Permission.objects.get(content_type__app_label=app, codename=codename) for app, codename in perms]
        )
        groups[name] = group
    return groups


def role_group(name: str):
    from django.contrib.auth.models import Group, Permission

    if name not in ROLES:
        raise ValueError(f"Unknown role {name!r}; choose one of: {', '.join(ROLES)}")
    return ensure_roles(Group, Permission)[name]
