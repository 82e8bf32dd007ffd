"""Wave-4 attacks on the surfaces around the ORM scoping: the cache, read replicas, retrieval,
API keys, tokens and sessions, the audit trail.

Each test names the route it tries and asserts the one outcome that closes it, on every backend.
"""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from django.db import router
from django.test import override_settings
from django.utils import timezone

from accounts import tokens
from accounts.backends import EmailBackend
from accounts.models import HashedSession, MFASettings, Organization, User, UserSession
from agentforge_agents.models import Agent, AgentTool, Tool, agent_for_chat
from agentforge_core.tenancy import OrgScopeError, org_scope, unscoped
from agentforge_site import caching, replicas
from knowledge import vectors
from knowledge.models import MAX_RESULTS, Document, DocumentChunk
from knowledge.retrieval import hybrid_search, keyword_hits, search_knowledge
from knowledge.vectors import semantic_search, set_embeddings
from security.audit import verify_chain
from security.models import APIKey, AuditLog, SecurityEvent
from settings_app.models import OrgSetting, org_setting_values
from tests.test_caching import CLOSED_PORT_URL, REDIS_TEST_URL, caches_for, clear_own_keys

# Our own Redis database: other engineers' runs on this machine use others.
PASSWORD = "Correct-horse-42!"
NEW_PASSWORD = "Battery-staple-77?"
_seq = itertools.count(1)


def another_client():
    """The next request comes from someone else: nothing pins its reads to the primary."""
    replicas.new_read_state()
    assert not replicas.reads_pinned()


# --- cache ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_cache_an_agent_cached_for_one_organization_is_not_served_under_another(cache_backend, make_org):
    a, b = make_org(), make_org()
    theirs = Agent.all_orgs.create(org=b, name="Theirs")
    with org_scope(b):
        assert agent_for_chat(theirs.pk).name == "Theirs"  # now in the cache, under B
    with org_scope(a), pytest.raises(Agent.DoesNotExist):
        agent_for_chat(theirs.pk)


@pytest.mark.django_db(transaction=True)
def test_cache_an_unlinked_tool_leaves_the_cached_agent_at_once(cache_backend, make_org):
    org = make_org()
    agent = Agent.all_orgs.create(org=org, name="Helper")
    tool = Tool.all_orgs.create(org=org, name="Payments", type="api")
    link = AgentTool.all_orgs.create(org=org, agent=agent, tool=tool, tool_ref=str(tool.pk), position=0)
    with org_scope(org):
        assert [t.name for t in agent_for_chat(agent.pk).chat_tools] == ["Payments"]
        link.delete()
        assert agent_for_chat(agent.pk).chat_tools == []


@pytest.mark.django_db(transaction=True)
def test_cache_redis_down_falls_back_to_each_organizations_own_rows(make_org):
    a, b = make_org(), make_org()
    OrgSetting.all_orgs.create(org=a, key="security.password_min_length", value=12)
    OrgSetting.all_orgs.create(org=b, key="security.password_min_length", value=20)
    with override_settings(CACHES=caches_for(CLOSED_PORT_URL)):
        caching.status.down_since = None
        assert [org_setting_values(a.pk), org_setting_values(b.pk)] == [
            {"security.password_min_length": 12},
            {"security.password_min_length": 20},
        ]
    caching.status.down_since = None


@pytest.mark.django_db(transaction=True)
def test_cache_a_bump_lost_while_redis_failed_is_made_up_when_it_answers_again(make_org):
    # A permission revoked while Redis timed out must not come back with Redis for CACHE_TIMEOUT.
    org = make_org()
    setting = OrgSetting.all_orgs.create(org=org, key="security.password_min_length", value=12)
    with override_settings(CACHES=caches_for(REDIS_TEST_URL)):
        clear_own_keys()
        caching.status.down_since = None
        try:
            assert org_setting_values(org.pk) == {"security.password_min_length": 12}  # cached
            caching.status.failed(ConnectionError("Redis timed out"))  # skipped for a few seconds
            setting.value = 16
            setting.save()  # its bump cannot reach Redis
            caching.status._retry_at = 0.0  # Redis answers again
            assert org_setting_values(org.pk) == {"security.password_min_length": 16}
        finally:
            caching.status.down_since = None
            clear_own_keys()


@pytest.mark.django_db(transaction=True)
def test_cache_a_read_missing_the_cache_computes_on_the_primary_not_on_a_lagging_replica(routed, make_org):
    # Another client's write bumped the generation; this client's miss must not store what a
    # replica still holds (the permission before the revocation) under the new generation.
    org = make_org()
    OrgSetting.all_orgs.create(org=org, key="security.password_min_length", value=14)
    another_client()
    assert org_setting_values(org.pk) == {"security.password_min_length": 14}


# --- read replicas: security state is read from the primary ---------------------------------


@pytest.mark.django_db(transaction=True)
def test_replica_a_revoked_api_key_is_refused_by_the_next_client(routed, make_org):
    org = make_org()
    key, plaintext = APIKey.all_orgs.create_key(org=org, name="ci")
    key.revoke()
    another_client()
    assert APIKey.all_orgs.get_from_key(plaintext) is None


@pytest.mark.django_db(transaction=True)
def test_replica_an_ended_platform_session_is_refused_by_the_next_client(routed, make_org, make_user):
    user = make_user(make_org())
    _, token = tokens.create_session(user)
    tokens.revoke_session(token)
    another_client()
    assert tokens.get_session(token) is None


@pytest.mark.django_db(transaction=True)
def test_replica_a_disabled_user_is_no_longer_the_sessions_user(routed, make_org, make_user):
    user = make_user(make_org())
    User.all_orgs.filter(pk=user.pk).update(status=User.Status.SUSPENDED)
    another_client()
    assert EmailBackend().get_user(user.pk) is None


@pytest.mark.django_db(transaction=True)
def test_replica_the_old_password_stops_signing_in_once_changed(routed, make_org, make_user):
    user = make_user(make_org(), password=PASSWORD)
    user.set_password(NEW_PASSWORD)
    user.save()
    another_client()
    assert EmailBackend().authenticate(None, email=user.email, password=PASSWORD) is None
    another_client()
    assert EmailBackend().authenticate(None, email=user.email, password=NEW_PASSWORD) == user


@pytest.mark.django_db(transaction=True)
def test_replica_a_signed_out_cookie_session_is_anonymous_for_the_next_client(routed):
    from accounts.sessions import SessionStore

    store = SessionStore()
    store["_auth_user_id"] = "someone"
    store.save()
    key = store.session_key
    SessionStore(key).flush()
    another_client()
    assert SessionStore(key).load() == {}


@pytest.mark.django_db(transaction=True)
def test_replica_an_organization_that_just_required_mfa_requires_it_at_the_next_sign_in(routed, make_org):
    from accounts.mfa import org_requires_mfa

    org = make_org()
    Organization.all_orgs.filter(pk=org.pk).update(require_mfa=True)
    another_client()
    assert org_requires_mfa(org.pk) is True  # a read routed to the replica would have raised


def test_replica_credential_tables_are_read_from_the_primary_and_others_from_the_replica(routed):
    for model in (User, UserSession, HashedSession, MFASettings, APIKey, SecurityEvent):
        assert router.db_for_read(model) == "default"
    assert router.db_for_read(Agent) == "replica1"


# --- retrieval -------------------------------------------------------------------------------


@pytest.fixture
def kb(tmp_path, settings, make_org):
    settings.VECTOR_INDEX_DIR = str(tmp_path / "vector-index")
    vectors.clear_cache()
    org = make_org()
    with org_scope(org):
        tool = Tool.objects.create(name=f"kb {next(_seq)}", type=Tool.Type.KNOWLEDGE)
        doc = Document.objects.create(title="handbook", tool=tool)
        chunks = DocumentChunk.objects.bulk_create(
            DocumentChunk(chunk_id=cid, text=text, tool=tool, document=doc, index_position=i)
            for i, (cid, text) in enumerate([("a", "alpha bravo"), ("b", "bravo charlie")])
        )
        set_embeddings(chunks, [[1, 0], [0, 1]], "m")
    yield org, tool
    vectors.clear_cache()


@pytest.mark.django_db(transaction=True)
def test_retrieval_a_huge_limit_returns_every_hit_instead_of_a_database_error(kb):
    org, tool = kb
    huge = 10**20  # beyond a 64-bit LIMIT: OverflowError on SQLite, "bigint out of range" elsewhere
    with org_scope(org):
        assert sorted(h.chunk.chunk_id for h in keyword_hits("bravo", huge)) == ["a", "b"]  # tied: by id
        assert [h.chunk.chunk_id for h in semantic_search([1, 0], huge)] == ["a", "b"]
        assert [h.chunk.chunk_id for h in hybrid_search("alpha", [1, 0], huge)] == ["a", "b"]
        tool.kb_config = {"search_type": "keyword", "top_k": huge}
        tool.save()
        assert [h.chunk.chunk_id for h in search_knowledge(tool, "charlie")] == ["b"]


def test_retrieval_limits_are_capped():
    from knowledge.models import result_limit

    assert [result_limit(n) for n in (-5, 0, 7, MAX_RESULTS + 1, 10**30)] == [0, 0, 7, MAX_RESULTS, MAX_RESULTS]


@pytest.mark.django_db(transaction=True)
def test_retrieval_hostile_full_text_queries_are_words_on_every_engine(kb, make_org):
    org, _ = kb
    other = make_org()
    with org_scope(other):
        DocumentChunk.objects.create(chunk_id="theirs", text="alpha bravo charlie")
    hostile = [
        "_",
        "alpha\x00bravo",
        "alpha\r\n\t-bravo",
        "x" * 5000,
        "alpha* NEAR/2 bravo",
        "+alpha -bravo ~charlie <delta >echo (foxtrot) @3",
        "'alpha' & !bravo | <-> charlie:*",
        'scope : "o' + str(other.pk).replace("-", "") + '"',
        " ".join(f"w{i}" for i in range(500)) + " alpha",
    ]
    with org_scope(org):
        found = [sorted(h.chunk.chunk_id for h in keyword_hits(q, 10)) for q in hostile]
    assert found == [[], ["a", "b"], ["a", "b"], [], ["a", "b"], ["a", "b"], ["a", "b"], [], []]


# --- API keys ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_api_key_of_one_organization_is_no_key_while_another_is_active(make_org):
    a, b = make_org(), make_org()
    _, plaintext = APIKey.all_orgs.create_key(org=a, name="a's")
    with org_scope(b):
        assert APIKey.all_orgs.get_from_key(plaintext) is None
        assert APIKey.objects.get_from_key(plaintext) is None
    assert SecurityEvent.all_orgs.filter(event_type=SecurityEvent.EventType.API_KEY_REJECTED).count() == 0
    with org_scope(a):
        assert APIKey.all_orgs.get_from_key(plaintext).org_id == a.pk
    assert APIKey.all_orgs.get_from_key(plaintext).org_id == a.pk


@pytest.mark.django_db(transaction=True)
def test_api_key_revoked_between_two_uses_a_second_apart_is_refused(make_org):
    org = make_org()
    key, plaintext = APIKey.all_orgs.create_key(org=org, name="k")
    assert APIKey.all_orgs.get_from_key(plaintext) == key  # use recorded: the next minute writes nothing
    APIKey.all_orgs.get(pk=key.pk).revoke()
    assert APIKey.all_orgs.get_from_key(plaintext) is None


@pytest.mark.django_db(transaction=True)
def test_api_key_guessing_the_secret_of_a_known_prefix_is_refused_and_recorded(make_org):
    org = make_org()
    key, plaintext = APIKey.all_orgs.create_key(org=org, name="k")
    guess = plaintext[:13] + ("A" if plaintext[13] != "A" else "B") + plaintext[14:]
    assert APIKey.all_orgs.get_from_key(guess) is None
    assert APIKey.all_orgs.get_from_key(plaintext[:13]) is None
    assert APIKey.all_orgs.get_from_key("afk_zzzzzzzz_" + "x" * 43) is None
    reasons = list(SecurityEvent.all_orgs.values_list("details__reason", flat=True))
    assert reasons == ["wrong_secret"]


# --- tokens and sessions ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_tokens_of_another_organization_are_not_found_while_one_is_active(make_org, make_user):
    a, b = make_org(), make_org()
    user = make_user(a, password=PASSWORD)
    reset = tokens.issue_password_reset_token(user)
    pending = make_user(a, status=User.Status.PENDING)
    verify = tokens.issue_verification_token(pending)
    _, session = tokens.create_session(user)
    with org_scope(b):
        assert tokens.reset_password(reset, NEW_PASSWORD) is None
        assert tokens.verify_email(verify) is None
        assert tokens.get_session(session) is None
        assert tokens.revoke_session(session) is False
    # Untouched, and each still works in its own organization.
    with org_scope(a):
        assert tokens.get_session(session).user_id == user.pk
        assert tokens.reset_password(reset, NEW_PASSWORD) == user
        assert tokens.verify_email(verify) == pending
    assert User.all_orgs.get(pk=user.pk).check_password(NEW_PASSWORD) is True
    assert User.all_orgs.get(pk=pending.pk).status == User.Status.ACTIVE


@pytest.mark.django_db(transaction=True)
def test_tokens_are_issued_to_the_active_organizations_users_only(make_org, make_user):
    a, b = make_org(), make_org()
    user = make_user(a)
    with org_scope(b):
        for issue in (tokens.issue_password_reset_token, tokens.issue_verification_token, tokens.create_session):
            with pytest.raises(OrgScopeError):
                issue(user)
    row = User.all_orgs.get(pk=user.pk)
    assert (row.reset_password_token_hash, row.verification_token_hash) == (None, None)
    assert UserSession.all_orgs.filter(user=user).count() == 0
    with org_scope(a):
        assert tokens.verify_email(tokens.issue_verification_token(user)) == user


@pytest.mark.django_db(transaction=True)
def test_tokens_are_used_once(make_org, make_user):
    org = make_org()
    user = make_user(org, password=PASSWORD)
    reset = tokens.issue_password_reset_token(user)
    assert tokens.reset_password(reset, NEW_PASSWORD) == user
    assert tokens.reset_password(reset, "Another-pass-99#") is None
    pending = make_user(org, status=User.Status.PENDING)
    verify = tokens.issue_verification_token(pending)
    assert tokens.verify_email(verify) == pending
    assert tokens.verify_email(verify) is None


@pytest.mark.django_db(transaction=True)
def test_tokens_two_requests_racing_with_one_token_use_it_once(make_org, make_user, monkeypatch):
    """Both requests found the token's user before either used it: only the first resets or verifies."""
    org = make_org()
    user = make_user(org, password=PASSWORD)
    reset = tokens.issue_password_reset_token(user)
    found_by_both = tokens.user_for_reset_token(reset)
    assert tokens.reset_password(reset, NEW_PASSWORD) == user
    monkeypatch.setattr(tokens, "user_for_reset_token", lambda token: found_by_both)
    assert tokens.reset_password(reset, "Another-pass-99#") is None
    assert User.all_orgs.get(pk=user.pk).check_password(NEW_PASSWORD)

    pending = make_user(org, status=User.Status.PENDING)
    verify = tokens.issue_verification_token(pending)
    found_by_both = tokens.user_for_verification_token(verify)
    assert tokens.verify_email(verify) == pending
    monkeypatch.setattr(tokens, "user_for_verification_token", lambda token: found_by_both)
    assert tokens.verify_email(verify) is None


@pytest.mark.django_db(transaction=True)
def test_tokens_a_reset_link_issued_before_a_password_change_no_longer_resets(make_org, make_user):
    from accounts.services import change_password

    user = make_user(make_org(), password=PASSWORD)
    reset = tokens.issue_password_reset_token(user)
    change_password(user, NEW_PASSWORD)
    assert tokens.reset_password(reset, "Attacker-chosen-1!") is None
    assert User.all_orgs.get(pk=user.pk).check_password(NEW_PASSWORD) is True


@pytest.mark.django_db(transaction=True)
def test_sessions_end_on_a_password_change_made_without_signals(make_org, make_user):
    user = make_user(make_org(), password=PASSWORD)
    _, token = tokens.create_session(user)
    later = timezone.now() + dt.timedelta(seconds=1)
    User.all_orgs.filter(pk=user.pk).update(password_changed_at=later)
    assert tokens.get_session(token) is None
    assert UserSession.all_orgs.get(user=user).revoked_at is not None


# --- the audit trail ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_audit_an_entry_in_another_organizations_name_is_refused(make_org):
    a, b = make_org(), make_org()
    before = AuditLog.all_orgs.filter(org=b).count()
    with org_scope(a):
        with pytest.raises(OrgScopeError, match="audit entry of organization"):
            AuditLog.objects.create(org_id=b.pk, action=1, object_repr="forged", changes={})
        with pytest.raises(OrgScopeError, match="audit entry of organization"):
            AuditLog.all_orgs.bulk_create([AuditLog(org_id=b.pk, action=1, object_repr="forged", changes={})])
        AuditLog.objects.create(org_id=a.pk, action=1, object_repr="own", changes={})
    assert AuditLog.all_orgs.filter(org=b).count() == before
    with unscoped():
        assert verify_chain(b).ok is True and verify_chain(a).ok is True


@pytest.mark.django_db(transaction=True)
def test_audit_a_user_of_another_organization_is_audited_in_its_own_chain_from_system_work(make_org, make_user):
    a, b = make_org(), make_org()
    user = make_user(b, password=PASSWORD)
    tokens.reset_password(tokens.issue_password_reset_token(user), NEW_PASSWORD)
    entry = AuditLog.all_orgs.filter(legacy_action="password_reset").get()
    assert entry.org_id == b.pk and entry.org_id != a.pk


@pytest.mark.django_db(transaction=True)
@pytest.mark.backends("sqlite", "mysql")  # PostgreSQL's trigger refuses the UPDATE itself (test_security_audit)
def test_audit_an_entry_moved_into_another_organizations_chain_breaks_both_chains(make_org):
    from django.db import connection

    a, b = make_org(), make_org()
    for org in (a, b):
        with org_scope(org):
            for n in range(3):
                Agent.objects.create(name=f"Agent {n}")
    moved = AuditLog.all_orgs.filter(org=a).order_by("id")[1]
    with connection.cursor() as cursor:
        cursor.execute("UPDATE audit_logs SET org_id = %s WHERE id = %s", [b.pk.hex, moved.pk])
    with unscoped():
        reports = [verify_chain(a), verify_chain(b)]
    assert [report.ok for report in reports] == [False, False]
