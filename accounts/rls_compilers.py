"""PostgreSQL's SQL compilers, each marking the statements it runs as built by the ORM.

:mod:`accounts.rls` lets an ORM statement run with no organization active use the bypass
role (scoped managers have refused such a query before it gets here), while hand-written
SQL in the same state sees no tenant row. Installed as the PostgreSQL backend's
``compiler_module`` by ``accounts.rls.install()``.
"""

from django.db.backends.postgresql import compiler as base

from accounts.rls import orm_statement


def _marked(parent):
    def execute_sql(self, *args, **kwargs):
        token = orm_statement.set(True)
        try:
            return parent.execute_sql(self, *args, **kwargs)
        finally:
            orm_statement.reset(token)

    return type(parent.__name__, (parent,), {"execute_sql": execute_sql, "__module__": __name__})


SQLCompiler = _marked(base.SQLCompiler)
SQLInsertCompiler = _marked(base.SQLInsertCompiler)
SQLDeleteCompiler = _marked(base.SQLDeleteCompiler)
SQLUpdateCompiler = _marked(base.SQLUpdateCompiler)
SQLAggregateCompiler = _marked(base.SQLAggregateCompiler)
