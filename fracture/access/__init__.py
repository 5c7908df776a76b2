"""Who may do what on the MLflow registry: MLflow basic-auth users, the project's roles, and a server-side guard.

The tracking server runs MLflow's own authentication (`mlflow server --app-name basic-auth`). MLflow's
permissions are per resource (READ < USE < EDIT < MANAGE); on a registered model, EDIT already allows moving any
alias and writing any tag, which would let the pipeline promote its own model. The guard closes that gap on the
server; the roles say who holds which permission.

Modules, one concern each (callers import from them directly):

- `names`: role names, protected aliases and audit tag keys, shared by the guard, the roles and the registry.
- `guard`: the server's `authorization_function`: MLflow basic auth, then MANAGE for the promotion-only writes
  (moving `champion` / `previous-champion`, promotion and rollback audit tags, renames) and an audit `*_by` tag
  must name the authenticated user.
- `identity`: the client side: the authenticated user behind `MLFLOW_TRACKING_USERNAME` / `PASSWORD` (or
  token), the permission check before a registry change, and the one-line 401 / 403 messages.
- `roles`: `run_setup_roles`, which creates the roles on the server and assigns users to them.
"""
