"""The media keys of homeserver.yaml: defaults, accepted values and nested errors."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.config import (DEFAULT_PREVIEW_IP_BLACKLIST, DEFAULT_THUMBNAIL_SIZES, ConfigError,
                               MediaConfig, ThumbnailSize, UploadLimit, parse_config)

PATH = "/etc/hearth/homeserver.yaml"


def media(extra: dict[str, Any]) -> MediaConfig:
    return parse_config({"server_name": "example.com", **extra}, PATH).media


def error(extra: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as e:
        media(extra)
    return str(e.value)


def test_defaults_match_synapse() -> None:
    m = media({})
    assert m == MediaConfig()
    assert m.enable_authenticated_media is True and m.url_preview_enabled is False
    assert m.max_image_pixels == 32 * 1024 * 1024 and m.max_spider_size == 10 * 1024 * 1024
    assert m.thumbnail_sizes == DEFAULT_THUMBNAIL_SIZES
    assert (m.max_pending_media_uploads, m.unused_expiration_time_ms) == (5, 86_400_000)
    assert m.local_media_lifetime_ms is None and m.remote_media_lifetime_ms is None
    assert m.upload_limits == () and m.url_preview_ip_range_blacklist == DEFAULT_PREVIEW_IP_BLACKLIST
    assert "127.0.0.0/8" in m.url_preview_ip_range_blacklist


def test_values() -> None:
    m = media({
        "enable_authenticated_media": False, "max_image_pixels": "1M",
        "thumbnail_sizes": [{"width": 10, "height": 20, "method": "crop"}, {"width": 5, "height": 5}],
        "max_pending_media_uploads": 1, "unused_expiration_time": "1h",
        "media_upload_limits": [{"time_period": "1d", "max_size": "1G"}],
        "media_retention": {"local_media_lifetime": "90d", "remote_media_lifetime": "14d"},
        "url_preview_enabled": True, "url_preview_ip_range_blacklist": ["10.0.0.1", "fd00::/8"],
        "max_spider_size": "1M", "url_preview_timeout": "3s",
    })
    assert m.enable_authenticated_media is False and m.max_image_pixels == 1024 * 1024
    assert m.thumbnail_sizes == (ThumbnailSize(10, 20, "crop"), ThumbnailSize(5, 5, "scale"))
    assert (m.max_pending_media_uploads, m.unused_expiration_time_ms) == (1, 3_600_000)
    assert m.upload_limits == (UploadLimit(86_400_000, 1024 ** 3),)
    assert (m.local_media_lifetime_ms, m.remote_media_lifetime_ms) == (90 * 86_400_000, 14 * 86_400_000)
    assert m.url_preview_ip_range_blacklist == ("10.0.0.1/32", "fd00::/8")
    assert (m.max_spider_size, m.url_preview_timeout_ms) == (1024 * 1024, 3000)
    assert media({"media_retention": None}).local_media_lifetime_ms is None
    assert media({"url_preview_ip_range_blacklist": []}).url_preview_ip_range_blacklist == ()


@pytest.mark.parametrize("extra,message", [
    ({"media_retention": {"local_media_lifetme": "1d"}},
     "unknown key 'media_retention.local_media_lifetme' (did you mean 'local_media_lifetime'?)"),
    ({"media_retention": {"local_media_lifetime": "forever"}}, "'media_retention.local_media_lifetime'"),
    ({"media_retention": {"remote_media_lifetime": 0}}, "'media_retention.remote_media_lifetime'"),
    ({"thumbnail_sizes": []}, "'thumbnail_sizes': expected at least one"),
    ({"thumbnail_sizes": [{"width": 10, "height": 10, "method": "stretch"}]}, "'thumbnail_sizes': item 0"),
    ({"thumbnail_sizes": [{"width": 10, "height": 10, "size": 1}]}, "item 0: unknown key 'size'"),
    ({"thumbnail_sizes": [{"width": 0, "height": 10}]}, "'thumbnail_sizes'"),
    ({"media_upload_limits": [{"time_period": 0, "max_size": 5}]}, "'media_upload_limits'"),
    ({"media_upload_limits": {"time_period": "1h", "max_size": 5}}, "'media_upload_limits'"),
    ({"url_preview_ip_range_blacklist": "10.0.0.0/8"}, "'url_preview_ip_range_blacklist'"),
    ({"unused_expiration_time": 0}, "'unused_expiration_time': must be positive"),
    ({"url_preview_timeout": 0}, "'url_preview_timeout': must be positive"),
])
def test_errors_name_the_key(extra: dict[str, Any], message: str) -> None:
    assert message in error(extra)
