"""attnlab.decode"""
