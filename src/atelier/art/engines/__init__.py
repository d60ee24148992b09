"""The engines: what paints. Each takes pictures (tensors or PIL images) and keyword-only
options and reports through a progress callback.

``protocol`` is what every arbitrary-style engine offers (encode content, encode style,
decode); ``adain``, ``microast`` and ``filters`` are the instant engines, ``gatys`` the slow
optimising one, ``upscale`` waifu2x, ``video`` any of them over a clip.
"""
