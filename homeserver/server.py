"""The composition root: builds every service explicitly and starts the listeners.

There is no service locator: each object gets what it needs through its constructor, here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from twisted.internet import defer, endpoints

from crypto.keys import SigningKey, format_signing_key_file, generate_signing_key, parse_signing_key_file
from crypto.room_versions import DEFAULT_ROOM_VERSION, KNOWN_ROOM_VERSIONS
from homeserver.accounts.auth import Authenticator
from homeserver.accounts.client_ips import FLUSH_INTERVAL_S, ClientIpTracker
from homeserver.accounts.deactivation import DeactivationService
from homeserver.accounts.profiles import ProfileService
from homeserver.accounts.registration import RegistrationService
from homeserver.accounts.sessions import SessionService
from homeserver.accounts.uia import SESSION_LIFETIME_MS, UserInteractiveAuth
from homeserver.api.admin.media import AdminMediaApi
from homeserver.api.admin.registration_tokens import AdminRegistrationTokensApi
from homeserver.api.admin.users import AdminUsersApi
from homeserver.api.client.account import AccountApi
from homeserver.api.client.account_data import AccountDataApi
from homeserver.api.client.devices import DevicesApi
from homeserver.api.client.directory import DirectoryApi
from homeserver.api.client.filters import FiltersApi
from homeserver.api.client.keys import KeysApi
from homeserver.api.client.login import LoginApi
from homeserver.api.client.media import MediaApi
from homeserver.api.client.membership import MembershipApi
from homeserver.api.client.presence import PresenceApi
from homeserver.api.client.notifications import NotificationsApi
from homeserver.api.client.profile import ProfileApi
from homeserver.api.client.push_rules import PushRulesApi
from homeserver.api.client.pushers import PushersApi
from homeserver.api.client.receipts import ReceiptsApi
from homeserver.api.client.register import RegisterApi
from homeserver.api.client.relations import RelationsApi
from homeserver.api.client.reporting import ReportingApi
from homeserver.api.client.rooms import RoomsApi
from homeserver.api.client.room_keys import RoomKeysApi
from homeserver.api.client.search import SearchApi
from homeserver.api.client.sliding_sync import SlidingSyncApi
from homeserver.api.client.sync import SyncApi
from homeserver.api.client.tags import TagsApi
from homeserver.api.client.to_device import ToDeviceApi
from homeserver.api.client.typing import TypingApi
from homeserver.api.client.user_directory import UserDirectoryApi
from homeserver.api.client.versions import VersionsApi
from federation.tls import server_tls_context_factory
from federation.e2ee import E2eeFederation
from federation.wiring import build_federation
from federation.media import FederationMediaApi, FederationMediaDownloader
from homeserver.clock import Clock
from homeserver.config import Config, ListenerConfig
from homeserver.e2ee.cross_signing import CrossSigningService
from homeserver.e2ee.device_lists import DeviceListTracker
from homeserver.e2ee.keys import KeyService
from homeserver.e2ee.room_keys import RoomKeyBackupService
from homeserver.e2ee.to_device import ToDeviceService
from homeserver.ephemeral.presence import PresenceService
from homeserver.ephemeral.receipts import ReceiptService
from homeserver.ephemeral.typing import TypingService
from homeserver.http.ratelimit import RateLimiter
from homeserver.http.router import AUTH_NONE, Router
from homeserver.http.burst import Burst
from homeserver.http.site import MatrixResource, make_site
from homeserver.jobs.scheduler import Scheduler
from homeserver.media.fetch import IpBlacklist, SafeFetcher
from homeserver.media.files import ContentFiles
from homeserver.media.preview import UrlPreviewer
from homeserver.media.repository import MediaRepository
from homeserver.notifier import Notifier
from homeserver.push.counts import NotificationCounts
from homeserver.push.processor import PushProcessor
from homeserver.push.pushers import HttpGateway, PusherService
from homeserver.push.rule_service import PushRuleService
from homeserver.rooms.builder import EventBuilder
from homeserver.rooms.creator import EventCreator
from homeserver.rooms.relations import AGGREGATED, Aggregations, RelationsService
from homeserver.rooms.serialize import ClientSerializer
from homeserver.rooms.service import RoomService
from homeserver.rooms.state_res import resolve_state
from homeserver.rooms.stripped import StrippedState
from homeserver.rooms.upgrade import RoomUpgrader
from homeserver.rooms.visibility import Visibility
from homeserver.search.indexer import SearchIndexer
from homeserver.search.room_events import RoomEventSearch
from homeserver.search.user_directory import DirectoryIndexer, UserDirectory
from homeserver.sync.filters import FilterService
from homeserver.sync.handler import SyncHandler
from homeserver.sync.sliding import SlidingSyncHandler
from storage.account_data import AccountDataStore
from storage.accounts import AccountStore
from storage.client_ips import ClientIpStore
from storage.database import Database
from storage.directory import DirectoryStore
from storage.e2ee_keys import E2eKeyStore
from storage.events import EventStore, PersistedEvent
from storage.filters import FilterStore
from storage.media import MediaStore
from storage.engines import create_engine
from storage.migrations import prepare_database
from storage.presence import PresenceStore
from storage.notifications import NotificationStore
from storage.profiles import ProfileStore
from storage.push_rules import PushRuleStore
from storage.pushers import PusherStore
from storage.receipts import ReceiptStore
from storage.registration_tokens import RegistrationTokenStore
from storage.relations import RelationStore
from storage.reports import ReportStore
from storage.room_keys import RoomKeyStore
from storage.search import SearchStore
from storage.sliding_sync import SlidingSyncStore
from storage.sync import SyncRelationStore, SyncStore
from storage.tags import TagStore
from storage.to_device import ToDeviceStore
from storage.uia import UiaStore
from storage.user_directory import UserDirectoryStore

logger = logging.getLogger(__name__)


def load_or_create_signing_key(path: str) -> SigningKey:
    """Read the server's ed25519 key, generating one (Synapse's file format) on first run."""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            keys = parse_signing_key_file(f.read())
        if not keys:
            raise ValueError(f"{path}: no signing key in file")
        return keys[0]
    key = generate_signing_key()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(format_signing_key_file([key]))
    logger.info("generated a new signing key in %s", path)
    return key


@dataclass
class HomeServer:
    """What start-up built; kept for shutdown and for tests that run in-process."""
    config: Config
    db: Database
    router: Router
    sites: list[Any]
    scheduler: Scheduler
    ports: list[Any]
    ip_tracker: ClientIpTracker


async def _health(req: Any) -> tuple[int, Any]:
    return 200, b"OK"


async def build_router(config: Config, db: Database, clock: Clock, signing_key: SigningKey
                       ) -> tuple[Router, Callable[[ListenerConfig], MatrixResource], Scheduler,
                                  ClientIpTracker]:
    accounts = AccountStore(db)
    profiles_store = ProfileStore(db)
    ip_store = ClientIpStore(db)
    uia_store = UiaStore(db)
    token_store = RegistrationTokenStore(db)

    ips = ClientIpTracker(ip_store, clock, config.user_ips_max_age_ms)
    auth = Authenticator(accounts, clock, ips)
    sessions = SessionService(accounts, clock, ips, config.refreshable_access_token_lifetime_ms,
                              config.refresh_token_lifetime_ms)
    registration = RegistrationService(accounts, profiles_store, clock, config.server_name,
                                       config.bcrypt_rounds, config.password_policy)
    uia = UserInteractiveAuth(uia_store, accounts, token_store, clock, config.server_name)
    media = MediaRepository(MediaStore(db), ContentFiles(config.media_store_path), clock,
                            config.server_name, config.media, config.max_upload_size)
    deactivation = DeactivationService(accounts, profiles_store, sessions, ips, clock,
                                       erase_media=media.delete_user_media)
    profiles = ProfileService(profiles_store, accounts, config.server_name)

    events = EventStore(db)
    await events.load()
    directory = DirectoryStore(db)
    reports = ReportStore(db)
    await reports.load()

    async def resolve(rv, states):  # type: ignore[no-untyped-def]
        return await resolve_state(rv, states, events.get_events)

    creator = EventCreator(events, EventBuilder(config.server_name, signing_key), clock, resolve)
    burst = Burst()  # answers first while the notifier wakes waiting requests
    notifier = Notifier(clock.reactor, burst)
    notifier.set_position("events", events.stream_ids.current())
    account_data = AccountDataStore(db)
    await account_data.load()
    notifier.set_position("account_data", account_data.current_position())

    # Awaited, with (room, the users whose /sync is waiting), before those requests are woken:
    # push evaluation of the event, then the waiting users' notification counts and membership
    # facts for the room, each read once for all of them where memory lacks them. The woken
    # requests then find everything ready and each runs to its answer without waiting again
    # (answers leave one by one instead of all at the end). With nobody waiting, evaluation
    # keeps batching events.
    before_wake: list[Callable[[str, list[str]], Awaitable[Any]]] = []

    def wake_for_event(persisted: PersistedEvent) -> None:
        # The event is committed: from now on a /sync includes it, even before its
        # recipients (a cached, sometimes async lookup) are woken.
        notifier.set_position("events", persisted.stream_ordering)

        async def wake() -> None:
            ev = persisted.event
            users = await events.get_interested_users(ev.room_id)
            if ev.type == "m.room.member" and ev.state_key:
                users.add(ev.state_key)  # the target hears of their own invite, kick or ban
            waiting = notifier.waiting_among(users)
            if not waiting:
                notifier.notify("events", persisted.stream_ordering, users=users)
                return
            burst.begin()  # answers first from here: the burst goes on through the wake-up
            try:
                for ready in before_wake:
                    try:
                        await ready(ev.room_id, waiting)
                    except Exception:  # only a head start: the requests are woken regardless
                        logger.exception("preparing the /sync wake-up for %s failed", ev.event_id)
                notifier.notify("events", persisted.stream_ordering, users=users)
            finally:
                burst.end()
        defer.ensureDeferred(wake()).addErrback(
            lambda f: logger.error("waking /sync for %s failed: %s", persisted.event.event_id, f))
    creator.listeners.append(wake_for_event)
    rooms = RoomService(events, creator, profiles_store, directory, config.server_name)
    profiles.listeners.append(rooms.profile_changed)
    visibility = Visibility(events)
    serializer = ClientSerializer(events, clock.time_msec)
    search_store = SearchStore(db)
    user_directory = UserDirectoryStore(db)
    events.persist_hooks.append(SearchIndexer(search_store).on_persist)
    events.persist_hooks.append(DirectoryIndexer(user_directory).on_persist)

    router = Router()
    room_versions = {v: "stable" for v in KNOWN_ROOM_VERSIONS}
    VersionsApi(config, room_versions, DEFAULT_ROOM_VERSION).register(router)
    RegisterApi(config, registration, sessions, uia, token_store,
                RateLimiter(config.rc_registration)).register(router)
    LoginApi(config, accounts, sessions, RateLimiter(config.rc_login_address),
             RateLimiter(config.rc_login_account),
             RateLimiter(config.rc_login_failed_attempts)).register(router)
    AccountApi(config, registration, sessions, deactivation, uia).register(router)
    DevicesApi(sessions, uia).register(router)
    ProfileApi(profiles).register(router)
    rooms_api = RoomsApi(rooms, events, visibility, serializer, RoomUpgrader(rooms, directory),
                         directory)
    rooms_api.register(router)
    membership_api = MembershipApi(rooms, events, directory, serializer)
    membership_api.register(router)
    RelationsApi(RelationsService(RelationStore(db, events), events, visibility), serializer).register(router)
    directory_api = DirectoryApi(directory, events, rooms, clock, config.server_name)
    directory_api.register(router)
    ReportingApi(reports, events, accounts, visibility, clock).register(router)
    SearchApi(RoomEventSearch(search_store, events, visibility), serializer).register(router)
    UserDirectoryApi(UserDirectory(user_directory)).register(router)
    AccountDataApi(account_data, notifier).register(router)
    TagsApi(TagStore(account_data), notifier).register(router)
    typing_notifs = TypingService(events, notifier, clock)
    creator.listeners.append(typing_notifs.on_event)
    receipts = ReceiptService(ReceiptStore(db), account_data, events, visibility, notifier, clock)
    await receipts.load()
    presence = PresenceService(PresenceStore(db), events, notifier, clock, config.server_name,
                               config.presence_enabled)
    await presence.load()
    creator.listeners.append(presence.on_event)
    TypingApi(typing_notifs).register(router)
    ReceiptsApi(receipts).register(router)
    PresenceApi(presence).register(router)
    push_rules = PushRuleService(PushRuleStore(db), account_data, notifier)
    notification_store = NotificationStore(db)
    push = PushProcessor(events, push_rules, notification_store, receipts.thread_of, clock,
                         config.server_name)
    if config.push_enabled:  # `push: {enabled: false}`: no rule evaluation, no notifications
        # Handed each event before the /sync wake-up, which waits for its evaluation.
        creator.listeners.insert(creator.listeners.index(wake_for_event), push.on_event)
        before_wake.append(lambda room_id, _: push.wait_pending([room_id]))
        before_wake.append(lambda room_id, users: notification_store.warm(users, room_id))
    before_wake.append(lambda _, users: events.prefetch_membership_facts(users))
    # Events committed but not evaluated before the last stop are evaluated now (in the
    # background); with push off, the position is forgotten.
    await push.start(config.push_enabled)
    push_counts = NotificationCounts(notification_store, push.wait_pending, clock.call_later)
    receipts.listeners.append(push_counts.on_receipt)
    pushers = PusherService(PusherStore(db), notification_store, events, push, clock,
                            HttpGateway(clock.reactor))
    push.listeners.append(pushers.on_notified)
    push_counts.listeners.append(pushers.on_counts_cleared)
    sessions.listeners.append(pushers)
    await pushers.start()
    PushRulesApi(push_rules).register(router)
    NotificationsApi(notification_store, events, serializer).register(router)
    PushersApi(pushers).register(router)
    to_device = ToDeviceService(ToDeviceStore(db), notifier, clock, config.server_name)
    await to_device.load()
    sessions.listeners.append(to_device)
    ToDeviceApi(to_device).register(router)
    RoomKeysApi(RoomKeyBackupService(RoomKeyStore(db))).register(router)
    e2e_key_store = E2eKeyStore(db)
    device_lists = DeviceListTracker(e2e_key_store, events, notifier)
    await device_lists.load()
    creator.listeners.append(device_lists.on_event)
    cross_signing = CrossSigningService(e2e_key_store, device_lists, accounts, clock)
    e2e_keys = KeyService(e2e_key_store, device_lists, cross_signing, clock, config.server_name)
    sessions.listeners.append(e2e_keys)
    KeysApi(e2e_keys, cross_signing, device_lists, uia).register(router)
    # /sync serializes the same new events for every member of a room: its own serializer
    # caches the bundled-aggregation lookups.
    sync_store = SyncStore(db, events)
    sync_relations = SyncRelationStore(db, events, [AGGREGATED])
    sync_serializer = ClientSerializer(events, clock.time_msec,
                                       Aggregations(sync_relations, visibility))
    stripped = StrippedState(events)
    sync_handler = SyncHandler(events, sync_store, visibility, sync_serializer, notifier,
                               account_data, typing_notifs, receipts, presence, to_device,
                               device_lists, e2e_keys, push_counts, push_rules, stripped)
    filters = FilterService(FilterStore(db))
    FiltersApi(filters).register(router)
    SyncApi(sync_handler, filters.resolve, set_presence=presence.set_state).register(router)
    sliding_sync = SlidingSyncHandler(events, sync_store, SlidingSyncStore(db), visibility,
                                      serializer, notifier, account_data, clock, typing_notifs,
                                      receipts, to_device, device_lists, e2e_keys, stripped)
    await sliding_sync.load()
    creator.listeners.append(sliding_sync.on_event)
    sessions.listeners.append(sliding_sync)
    SlidingSyncApi(sliding_sync, set_presence=presence.set_state).register(router)
    AdminUsersApi(config, registration, sessions, accounts, ip_store, ips, clock).register(router)
    AdminRegistrationTokensApi(token_store, clock).register(router)
    mc = config.media
    previewer = UrlPreviewer(media, SafeFetcher(clock.reactor, IpBlacklist(mc.url_preview_ip_range_blacklist),
                                                mc.max_spider_size, mc.url_preview_timeout_ms / 1000),
                             clock, mc.max_image_pixels) if mc.url_preview_enabled else None
    MediaApi(media, config.max_upload_size, previewer).register(router)
    AdminMediaApi(media).register(router)

    fed = build_federation(config, db, clock, signing_key, router, events, creator, rooms,
                           resolve, directory, profiles_store, accounts, notifier)
    # Remote media: fetched over federation and cached; our media served to other servers.
    fc = config.federation
    media.remote = FederationMediaDownloader(
        fed.client, config.server_name, domain_whitelist=fc.domain_whitelist,
        fetch_url=SafeFetcher(clock.reactor, IpBlacklist(fc.ip_range_blacklist),
                              config.max_upload_size, fc.client_timeout_ms / 1000,
                              user_agent="Hearth media").fetch)
    FederationMediaApi(media).register(router)
    membership_api.remote_alias = fed.remote_alias  # type: ignore[attr-defined]
    rooms_api.backfill = fed.backfill_room  # type: ignore[attr-defined]
    fed.connect_public_rooms(directory_api)  # type: ignore[attr-defined]
    stripped.remote_invite_state = fed.fed_store.get_invite_state
    fed.edus.typing, fed.edus.receipts = typing_notifs, receipts
    typing_notifs.listeners.append(fed.edus.on_typing)
    receipts.listeners.append(fed.edus.on_receipt)
    fed.api.edu_handlers["m.typing"] = fed.edus.typing_edu
    fed.api.edu_handlers["m.receipt"] = fed.edus.receipt_edu
    fed.edus.presence = presence
    presence.listeners.append(fed.edus.on_presence)
    fed.api.edu_handlers["m.presence"] = fed.edus.presence_edu
    e2ee_fed = E2eeFederation(config.server_name, fed.client, fed.sender, events, e2e_keys,
                              to_device, device_lists, e2e_key_store)
    e2ee_fed.register(router)
    e2e_keys.remote = e2ee_fed
    to_device.remote_send = e2ee_fed.send_to_device
    device_lists.listeners.append(
        lambda user, pos: e2ee_fed.local_devices_changed(user, None, pos))
    fed.api.edu_handlers["m.direct_to_device"] = e2ee_fed.direct_to_device_edu
    fed.api.edu_handlers["m.device_list_update"] = e2ee_fed.device_list_update_edu
    fed.api.edu_handlers["m.signing_key_update"] = e2ee_fed.device_list_update_edu

    ip_limiter = RateLimiter(config.rc_client_ip)
    router.add("GET", "/health", _health, auth=AUTH_NONE, ip_ratelimit=False)

    def resource_for(listener: ListenerConfig) -> MatrixResource:
        # One resource per listener: X-Forwarded-For is trusted only where that listener says
        # so, and a listener serves only the resources it names.
        return MatrixResource(router, auth, ip_limiter, x_forwarded=listener.x_forwarded,
                              max_json_depth=config.max_json_depth, resources=listener.resources,
                              federation_auth=fed.authenticator.authenticate, burst=burst)

    scheduler = Scheduler(clock)
    scheduler.every("flush client IPs", FLUSH_INTERVAL_S, ips.flush)
    purge_interval = min(3600.0, max(1.0, config.user_ips_max_age_ms / 2000))
    scheduler.every("purge old IP records", purge_interval, ips.purge_expired, now=True)
    scheduler.every("expire UIA sessions", 3600.0,
                    lambda: uia_store.delete_older_than(clock.time_msec() - SESSION_LIFETIME_MS))
    scheduler.every("purge to-device txn ids", 3600.0, to_device.purge_old_txns)
    scheduler.every("expire sliding sync connections", 3600.0, sliding_sync.expire_idle_connections)
    scheduler.at_shutdown("flush client IPs", ips.flush)
    scheduler.every("purge expired media", media.purge_interval_s(), media.purge_expired, now=True)
    scheduler.at_shutdown("finish thumbnails", media.wait_background)
    scheduler.every("prune read push notifications", 3600.0,
                    lambda: notification_store.delete_read_before(clock.time_msec() - 30 * 86400_000))
    scheduler.at_shutdown("finish push evaluation", push.wait_pending)
    scheduler.at_shutdown("stop pushers", pushers.stop)
    await fed.start()
    scheduler.at_shutdown("stop federation", fed.stop)
    scheduler.every("purge received federation transactions", 3600.0,
                    lambda: fed.fed_store.purge_transactions_before(clock.time_msec() - 86400_000))
    return router, resource_for, scheduler, ips


async def start(config: Config, reactor: Any) -> HomeServer:
    """Open the database, apply migrations, build the services and listen."""
    signing_key = load_or_create_signing_key(config.signing_key_path)
    os.makedirs(config.media_store_path, exist_ok=True)
    clock = Clock(reactor)
    db = Database(create_engine(config.database.name, config.database.args), reactor)
    db.start()
    applied = await prepare_database(db)
    if applied:
        logger.info("database schema migrated: %s", ", ".join(applied))
    router, resource_for, scheduler, ips = await build_router(config, db, clock, signing_key)
    ports = []
    sites = []
    for lis in config.listeners:
        site = make_site(resource_for(lis), config.max_json_body_size, config.max_upload_size)
        sites.append(site)
        for addr in lis.bind_addresses:
            interface = addr if ":" not in addr else addr.strip("[]")
            if lis.tls:
                fc = config.federation
                assert fc.tls_certificate_path and fc.tls_private_key_path  # config checks this
                ep = endpoints.SSL4ServerEndpoint(
                    reactor, lis.port, server_tls_context_factory(fc.tls_certificate_path,
                                                                  fc.tls_private_key_path),
                    interface=interface)
            else:
                ep = endpoints.TCP4ServerEndpoint(reactor, lis.port, interface=interface) \
                    if ":" not in interface else endpoints.TCP6ServerEndpoint(reactor, lis.port,
                                                                             interface=interface)
            port = await ep.listen(site)
            ports.append(port)
            host = port.getHost()
            logger.info("listening on %s://%s:%d/ (%s)", "https" if lis.tls else "http", addr,
                        host.port, ", ".join(lis.resources))
    scheduler.start()
    reactor.addSystemEventTrigger("before", "shutdown", lambda: defer.ensureDeferred(scheduler.stop()))
    return HomeServer(config, db, router, sites, scheduler, ports, ips)
