"""The codec names ``models.codecs.build_codec`` accepts, in a module of their own so that checking a
config (train.codec.CodecConfig) does not import the codecs (and diffusers through them)."""

CODEC_NAMES = ("wan2.1-vae", "wan2.2-vae", "taehv-wan2.1", "taehv-wan2.2", "tiny-ae")
