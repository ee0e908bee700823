plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "org.mobilepirl.demo"
    compileSdk = 35

    defaultConfig {
        applicationId = "org.mobilepirl.demo"
        minSdk = 21
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
    }
    // The model is memory-mapped from the APK: it must not be compressed.
    androidResources {
        noCompress += "tflite"
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions {
        jvmTarget = "17"
    }
}

dependencies {
    // LiteRT (formerly TensorFlow Lite), the Interpreter API with the built-in XNNPACK CPU delegate.
    implementation("com.google.ai.edge.litert:litert:1.4.1")
}
