"""Audio-visual sync encoder (a locally trained stand-in for SyncTalk's AVE, NOT the official LRS2 encoder)."""

from lipspace.av.sync import AudioEncoder, AVEncoder, MouthDecoder, MouthEncoder, load, save, sync_loss, sync_prob

__all__ = ["AudioEncoder", "AVEncoder", "MouthDecoder", "MouthEncoder", "load", "save", "sync_loss", "sync_prob"]
