"""The media repository: content-addressed files, thumbnails, URL previews, retention."""
