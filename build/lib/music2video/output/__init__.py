"""The files beside the video: ffmpeg video, subtitles, storyboard, report, sync."""
